"""A module entry point: every converter its import registers belongs to this distribution."""

import lavida_data


@lavida_data.converter("reverse_caption", columns=["s3_path", "caption"])
def reverse_caption(row, ctx):
    """Text to image with the caption's words reversed."""
    caption = " ".join(reversed(str(row["caption"]).split()))
    return {
        "conversations": [
            {"from": "human", "value": f"Generate an image with the caption: {caption} [[micro_conds_texts]]"},
            {"from": "gpt", "value": "Sure <image_gen>"},
        ],
        "image_gen": row["s3_path"],
    }
