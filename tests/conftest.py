"""Shared fixtures: a real S3-protocol server on loopback, example folders, tiny tables."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from tests.support import EXAMPLES, run_cli


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server in server mode on 127.0.0.1: boto3 talks HTTP to it, nothing is patched."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                             "AWS_DEFAULT_REGION", "S3_ENDPOINT_URL")}
    os.environ.update({
        "AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    os.environ.pop("S3_ENDPOINT_URL", None)
    yield url
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint, request):
    """A fresh bucket on the loopback server; returns a boto3 client and the bucket name."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint)
    name = "test-" + request.node.name.lower().replace("_", "-").replace("[", "-").replace("]", "")[:40].strip("-")
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture
def examples_copy(tmp_path) -> Path:
    """A private copy of examples/ (mixtures and data) that a test may change."""
    dst = tmp_path / "examples"
    shutil.copytree(EXAMPLES / "mixtures", dst / "mixtures")
    shutil.copytree(EXAMPLES / "data", dst / "data")
    return dst


@pytest.fixture
def cli():
    """Run the installed ``lavida-data`` command (:func:`tests.support.run_cli`)."""
    return run_cli


DEMO = "demo.yaml"
FACTORS = "batch_sizes: {t2i: 0.5, und: 0.25}\n"  # with per-device 4: t2i 2, und 1, others 4


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The example demo mixture, validated and prepared once for the whole run: (report, prepared
    folder, root); ``mixtures/factors.yaml`` beside it adds per-group batch factors."""
    from lavida_data import validate_file
    from lavida_data.prepare import prepare

    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(EXAMPLES / "mixtures", root / "mixtures")
    shutil.copytree(EXAMPLES / "data", root / "data")
    text = (root / "mixtures" / DEMO).read_text()
    (root / "mixtures" / "factors.yaml").write_text(text.replace("datasets:", FACTORS + "datasets:", 1))
    report = validate_file(root / "mixtures" / DEMO)
    prepare(report.plans.values(), str(root / "prepared"))
    return report, str(root / "prepared"), root


@pytest.fixture(scope="session")
def factors(demo):
    """The demo mixture with batch factors (t2i 0.5, und 0.25), on the same prepared data."""
    from lavida_data import validate_file

    report = validate_file(demo[2] / "mixtures" / "factors.yaml")
    assert report.valid, report.errors
    return report, demo[1], demo[2]


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> str:
    """The small offline LLaDA-style tokenizer (``build_tiny_tokenizer``), built once per run."""
    from lavida_data.transforms.tokenizer import build_tiny_tokenizer

    return build_tiny_tokenizer(str(tmp_path_factory.mktemp("tiny_tok")))
