"""voice_agent: a voice-first conversational agent (speech in, speech out, Markdown transcripts)."""

__version__ = "0.1.0"
