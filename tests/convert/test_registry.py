import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from lavida_data import Converter, LavidaDataError, Registry, converter
from lavida_data import registry


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = "caption"


def make(reg: Registry):
    @converter("mine", options=Opts, columns=lambda o: ["path", o.key], optional=["score"], aliases=["m"],
               registry=reg)
    def mine(row, ctx):
        """My converter.

        More text."""
        return {"conversations": [{"from": "human", "value": row[ctx.options.key]}]}

    return mine


def test_decorator_registers_a_converter_with_columns_from_options():
    reg = Registry(_loaded=True)
    conv = make(reg)
    assert isinstance(conv, Converter) and reg.get("m") is conv and reg.get("mine") is conv
    assert conv.source == "code (tests.convert.test_registry)"
    assert conv.required_columns(conv.parse_options({"key": "text"})) == ["path", "text"]
    assert conv.required_columns() == ["path", "caption"] and conv.optional_columns() == ["score"]
    assert conv.describe()["description"] == "My converter."
    with pytest.raises(ValidationError):
        conv.parse_options({"kye": "x"})


def test_name_clashes_are_errors():
    reg = Registry(_loaded=True)
    make(reg)
    with pytest.raises(LavidaDataError, match="already"):
        make(reg)

    with pytest.raises(LavidaDataError, match="'m' .* already taken by 'mine'"):
        @converter("other", aliases=["m"], registry=reg)
        def other(row, ctx):
            return {}


def test_unknown_name_suggests_the_nearest():
    with pytest.raises(KeyError, match="did you mean 'preprocess_grandf'"):
        registry.get("preprocess_grandff")


def test_builtins_are_the_fifteen_upstream_converters():
    names = {c.name for c in registry if c.source == "builtin"}
    assert names == {
        "preproces_text_to_image_generation_s3", "preproces_text_to_image_generation_piat_hash",
        "preproces_text_to_image_generation_s3_loc", "preproces_text_to_image_generation_layout_sam",
        "preproces_und_mammoth_si_10M", "preproces_vw_instruct", "preproces_grandf", "preproces_refcoco_rec",
        "preprocess_reflection_und", "process_gpt_edit", "process_sharegpt_4o_edit", "process_pica_banana",
        "process_gpt_edit_loc_gnd", "process_metaquery", "process_uniworld",
    }


def test_every_public_name_resolves():
    """``lavida_data.__all__`` is the public API: each name is there (the lazy ones load on use)."""
    import lavida_data

    missing = [name for name in lavida_data.__all__ if getattr(lavida_data, name, None) is None]
    assert missing == []
    assert callable(lavida_data.run_import) and callable(lavida_data.build_dataset)


def _name_in_child(conv) -> str:
    return f"{conv.name}:{conv.source}"


def test_converters_pickle_by_name_into_a_spawned_process():
    """DataLoader workers started with ``spawn`` (macOS, Windows) receive the plans' converters
    pickled: by name, resolved again in the new process."""
    import multiprocessing
    import pickle

    conv = registry.get("preprocess_grandf")
    assert pickle.loads(pickle.dumps(conv)) is conv
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply(_name_in_child, (conv,)) == f"{conv.name}:builtin"
