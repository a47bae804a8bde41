"""A third-party converter: text to image with the caption in capitals."""

from pydantic import BaseModel, ConfigDict, Field

import lavida_data


class ShoutOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exclaim: int = Field(1, ge=0, description="exclamation marks appended")


@lavida_data.converter("shout_caption", options=ShoutOptions, columns=["s3_path", "caption"], aliases=["shout"])
def shout_caption(row, ctx):
    """Text to image with the caption in capitals."""
    caption = str(row["caption"]).upper() + "!" * ctx.options.exclaim
    return {
        "conversations": [
            {"from": "human", "value": f"Generate an image with the caption: {caption} [[micro_conds_texts]]"},
            {"from": "gpt", "value": "Sure <image_gen>"},
        ],
        "image_gen": row["s3_path"],
    }
