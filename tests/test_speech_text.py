"""What is spoken: Markdown, LaTeX, emoji and reasoning are never read out literally."""

from __future__ import annotations

import subprocess
import sys

import pytest

from voice_agent.speech_text import for_speech


@pytest.mark.parametrize(
    ("reply", "spoken"),
    [
        ("## The **short** answer", "The short answer."),
        ("Use *italics* or __bold__ or ~~strike~~.", "Use italics or bold or strike."),
        ("- apples\n- pears 🍐", "apples.\npears."),
        ("1. first\n2. second", "first.\nsecond."),
        ("See [the docs](https://docs.example.org/x).", "See the docs."),
        ("Run `ls` then:\n\n```bash\nrm -rf /\n```\n\nDone.", "Run ls then:\nDone."),
        ("| Name | Age |\n|---|---|\n| Bob | 42 |", "Name, Age.\nBob, 42."),
        ("A $\\rightarrow$ B", "A to B."),
        ("Area is $\\pi r^2$.", "Area is pi r squared."),
        ("<think>The user wants X.</think>Here it is.", "Here it is."),
        ("<think>never closed, all reasoning", ""),
        ("Great job! 🎉👍🏽👨‍👩‍👧", "Great job!"),
        ("It costs $5 and $10.", "It costs $5 and $10."),
        ("Go north → then east.", "Go north to then east."),
        ("**Sure. Here it", "Sure. Here it."),
        ("is, `really` __snake_case__ stays.**", "is, really snake_case stays."),
    ],
)
def test_spoken_form(reply: str, spoken: str) -> None:
    assert for_speech(reply) == spoken


def test_no_markup_characters_survive_a_typical_markdown_reply() -> None:
    reply = (
        "# Plan\n\n**Step 1:** open the *valve*.\n\n> note: `careful`\n\n"
        "* a\n* b\n\n---\n\n$$E = mc^2$$ ✅"
    )
    spoken = for_speech(reply)
    for mark in ("#", "*", "`", ">", "$", "\\", "|", "---", "✅"):
        assert mark not in spoken, (mark, spoken)
    assert "open the valve" in spoken


def test_no_emoji_is_ever_read_out() -> None:
    """Every emoji the emoji package knows (flags, keycaps, families, skin tones) is dropped,
    between words and at a reply's end."""
    import emoji

    for sequence in emoji.EMOJI_DATA:
        assert for_speech(f"Yes {sequence} we can{sequence}") == "Yes we can.", sequence


def test_a_plain_reply_does_not_load_the_emoji_tables() -> None:
    """The tables hold 7 MB; a reply of ordinary prose (dashes, curly quotes, an ellipsis,
    accents) needs none of them."""
    code = (
        "import sys; from voice_agent.speech_text import for_speech; "
        "print(for_speech('It\\u2019s 5 \\u00b0C \\u2014 caf\\u00e9, \\u201cfine\\u201d\\u2026'), "
        "'emoji' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == "It\u2019s 5 \u00b0C, caf\u00e9, \u201cfine\u201d... False"
