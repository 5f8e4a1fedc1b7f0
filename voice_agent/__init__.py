"""voice_agent: a voice-first conversational agent (speech in, speech out, Markdown transcripts)."""

import sys

__version__ = "0.1.0"

# httpx imports its command-line tool whenever click is installed (it is, with
# huggingface_hub), and with it rich and pygments: 5.7 MB resident that the agent never uses,
# a tenth of what it holds with both speech stages on a server. A None entry makes that one
# import fail, and httpx falls back to a stub `main` as it does without click.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
