"""Command-line parsing; the work itself happens in session.py and friends."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from voice_agent import __version__
from voice_agent.config import Config, as_dict, load, user_config_path
from voice_agent.display import quiet_stdout
from voice_agent.errors import VoiceAgentError
from voice_agent.llm_endpoint import shown_url
from voice_agent.safe_text import inert, json_text
from voice_agent.secret import Secret

log = logging.getLogger("voice_agent")

# Global flag -> config key; None = not a config setting.
GLOBAL_FLAGS: dict[str, str | None] = {
    "config": None,
    "llm_url": "llm.base_url",
    "llm_model": "llm.model",
    "transcripts_dir": "transcripts.dir",
    "stt_model": "stt.model",
    "voice": "tts.voice",
    "stt_server": "stt.server",
    "tts_server": "tts.server",
    "input_device": "audio.input_device",
    "output_device": "audio.output_device",
    "barge_in": "audio.barge_in",
    "echo_cancellation": "audio.echo_cancellation",
    "save_audio": "transcripts.save_audio",
    "wake_word": "wake.word",
    "debug": None,
    "verbose": None,
}


def _global_options() -> argparse.ArgumentParser:
    """Flags accepted before or after the subcommand (SUPPRESS keeps one from erasing the other)."""
    p = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("global options")
    g.add_argument("--config", metavar="FILE", type=Path, help="read settings from this TOML file")
    g.add_argument("--llm-url", metavar="URL", help="OpenAI-compatible API root, e.g. .../v1")
    g.add_argument("--llm-model", metavar="NAME", help="model name at that endpoint")
    g.add_argument("--transcripts-dir", metavar="DIR", help="where session transcripts go")
    g.add_argument("--stt-model", metavar="NAME|PATH", help="faster-whisper size or model folder")
    g.add_argument("--voice", metavar="PATH", help="Piper voice .onnx file")
    g.add_argument("--stt-server", metavar="URI",
                   help="speech to text on a Wyoming server, tcp://HOST:PORT")  # fmt: skip
    g.add_argument("--tts-server", metavar="URI",
                   help="text to speech on a Wyoming server, tcp://HOST:PORT")  # fmt: skip
    g.add_argument("--input-device", metavar="INDEX|NAME", help="microphone (voice-agent devices)")
    g.add_argument("--output-device", metavar="INDEX|NAME", help="speaker (voice-agent devices)")
    g.add_argument(
        "--echo-cancellation",
        choices=("auto", "on", "off"),
        help="take the agent's own voice out of the microphone (default auto: when speaking)",
    )
    g.add_argument("--wake-word", metavar="NAME",
                   help="live: asleep until this is said (okay_nabu, hey_jarvis, hey_mycroft, "
                        "alexa); '' = always listening")  # fmt: skip
    g.add_argument(
        "--save-audio",
        action="store_true",
        default=None,
        help="keep each utterance and reply as FLAC beside the transcript",
    )
    g.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    g.add_argument("-v", "--verbose", action="store_true", help="show progress logs")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="A voice-first conversational agent: speech in, speech out.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{chat,devices,transcripts,config,service}")

    chat = sub.add_parser("chat", parents=[common], help="talk with the agent (default)")
    chat.add_argument(
        "--input",
        metavar="FILE",
        type=Path,
        action="append",
        default=[],
        help="an audio file (wav/flac/ogg/mp3) as one user turn; repeatable",
    )
    chat.add_argument(
        "--output-dir",
        metavar="DIR",
        type=Path,
        help="where the spoken replies to --input files are written",
    )
    chat.add_argument("--text", action="store_true", help="typed turns from stdin, one per line")
    chat.add_argument("--mute", action="store_true", help="with --text: print replies only")
    barge = chat.add_mutually_exclusive_group()
    barge.add_argument(
        "--barge-in",
        action="store_const",
        const="on",
        default=None,
        help="your speech interrupts the reply (default: when echo cancellation runs)",
    )
    barge.add_argument(
        "--no-barge-in",
        dest="barge_in",
        action="store_const",
        const="off",
        help="never interrupt the reply: the microphone is deaf while the agent speaks",
    )
    chat.add_argument(
        "--push-to-talk",
        action="store_true",
        help="press Enter to start and stop each turn instead of voice detection",
    )

    sub.add_parser("devices", parents=[common], help="list microphones and speakers")

    _transcripts_parser(sub, common)
    sub.add_parser("config", parents=[common], help="print the effective configuration")
    service = sub.add_parser("service", help="run the live agent as a systemd service at boot")
    service.add_argument("action", choices=["install", "uninstall", "status"])
    where = service.add_mutually_exclusive_group()
    where.add_argument("--user", dest="system", action="store_false", default=False,
                       help="your own systemd instance (the default)")  # fmt: skip
    where.add_argument("--system", action="store_true", help="the machine's (needs root)")
    service.add_argument("agent_args", nargs=argparse.REMAINDER, metavar="-- FLAGS",
                         help="after --: flags for the agent, e.g. -- --llm-url URL")  # fmt: skip
    return parser


def _transcripts_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("transcripts", parents=[common], help="list, show, search past sessions")
    t.add_argument("-n", type=int, default=0, help="with list: show only the newest N")
    t.add_argument("--json", action="store_true", help="with list: machine-readable output")
    ts = t.add_subparsers(dest="action", metavar="{list,show,search,export,stats,path,resume}")
    ls = ts.add_parser("list", parents=[common], help="sessions, newest first (the default)")
    ls.add_argument("-n", type=int, default=0, help="show only the newest N")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    show = ts.add_parser("show", parents=[common], help="render a transcript")
    show.add_argument("id", nargs="?", help="transcript ID (or a prefix of it)")
    show.add_argument("--latest", action="store_true", help="the newest transcript")
    show.add_argument("--raw", action="store_true", help="print the Markdown file as it is")
    find = ts.add_parser("search", parents=[common], help="turns that mention QUERY")
    find.add_argument("query")
    find.add_argument("--since", metavar="YYYY-MM-DD", help="only sessions from this day on")
    find.add_argument("--until", metavar="YYYY-MM-DD", help="only sessions up to this day")
    export = ts.add_parser("export", parents=[common], help="a transcript as json, txt or md")
    export.add_argument("id", nargs="?")
    export.add_argument("--latest", action="store_true")
    export.add_argument("--format", choices=["json", "txt", "md"], default="md")
    stats = ts.add_parser("stats", parents=[common], help="median and p90 of each stage")
    stats.add_argument("id", nargs="?", help="one transcript (default: all)")
    ts.add_parser("path", parents=[common], help="print the transcripts folder")
    play = ts.add_parser("play", parents=[common], help="replay a session's kept audio")
    play.add_argument("id", nargs="?")
    play.add_argument("turn", nargs="?", type=int, help="one turn (default: all)")
    play.add_argument("--latest", action="store_true")
    resume = ts.add_parser("resume", parents=[common], help="continue a past session")
    resume.add_argument("id", nargs="?")
    resume.add_argument("--latest", action="store_true")
    resume.add_argument("--text", action="store_true", help="typed turns from stdin")
    resume.add_argument("--mute", action="store_true", help="with --text: print replies only")
    resume_barge = resume.add_mutually_exclusive_group()
    resume_barge.add_argument("--barge-in", action="store_const", const="on", default=None)
    resume_barge.add_argument("--no-barge-in", dest="barge_in", action="store_const", const="off")
    resume.add_argument("--push-to-talk", action="store_true")


def _run_transcripts(opts: dict[str, Any], config: Config) -> int:
    from voice_agent import review

    folder = config.transcripts_dir
    action = opts.get("action") or "list"
    if action == "list":
        review.list_sessions(folder, int(opts.get("n") or 0), bool(opts.get("json")))
    elif action == "show":
        review.show(review.pick(folder, opts.get("id"), bool(opts.get("latest"))),
                    bool(opts.get("raw")))  # fmt: skip
    elif action == "search":
        return review.search(folder, opts["query"], opts.get("since"), opts.get("until"))
    elif action == "export":
        review.export(review.pick(folder, opts.get("id"), bool(opts.get("latest"))),
                      opts.get("format", "md"))  # fmt: skip
    elif action == "stats":
        review.stats(folder, opts.get("id"))
    elif action == "path":
        review.say(str(folder))
    elif action == "play":
        ident: str | None = opts.get("id")
        turn: int | None = opts.get("turn")
        if opts.get("latest") and ident is not None and ident.isdigit() and turn is None:
            turn = int(ident)  # "play --latest 3"
            ident = None
        entry = review.pick(folder, ident, bool(opts.get("latest")))
        review.play(entry, turn, config.audio.output_device)
    elif action == "resume":
        entry = review.pick(folder, opts.get("id"), bool(opts.get("latest")))
        from voice_agent.session import run_live, run_text

        if opts.get("text"):
            return asyncio.run(run_text(config, bool(opts.get("mute")), resume=entry))
        return asyncio.run(run_live(config, bool(opts.get("push_to_talk")), resume=entry))
    return 0


def _run_service(opts: dict[str, Any]) -> int:
    from voice_agent import service

    system, action = bool(opts.get("system")), opts["action"]
    agent_args = [a for a in opts.get("agent_args") or [] if a != "--"]
    if action == "install":
        lines, code = service.install(system, agent_args), 0
    elif agent_args:
        raise VoiceAgentError(f"service {action} takes no agent flags")
    elif action == "uninstall":
        lines, code = service.uninstall(system), 0
    else:
        code, lines = service.status(system)
    for line in lines:
        print(inert(line))
    return code


def _limit_malloc_arenas() -> None:
    """glibc gives every thread that allocates its own heap arena (up to eight per core); the
    model runtimes' thread pools then hold on to freed memory in each. Two arenas suffice
    (measured: 25 MB less at peak). Must run before those threads start."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to tune
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX


def main(argv: Sequence[str] | None = None) -> int:
    _limit_malloc_arenas()
    args = build_parser().parse_args(argv)
    opts = vars(args)
    debug = bool(opts.get("debug"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_InertFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if opts.get("verbose") else logging.WARNING,
        handlers=[handler],
    )
    # its block parser logs every rule it tries: ten lines per spoken sentence that bury the
    # agent's own in a --debug log
    logging.getLogger("markdown_it").setLevel(logging.INFO)
    try:
        config = load(opts.get("config"), os.environ, _flag_settings(opts))
        return _dispatch(opts, config)
    except VoiceAgentError as exc:
        if debug:
            log.exception("failed")
        print(f"voice-agent: error: {inert(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (| head): exit quietly, as a C program killed by SIGPIPE would
        quiet_stdout()
        return 141
    except Exception as exc:
        if debug:
            raise
        print(
            f"voice-agent: unexpected error: {type(exc).__name__}: {inert(str(exc))} "
            "(run again with --debug for the details)",
            file=sys.stderr,
        )
        return 1


class _InertFormatter(logging.Formatter):
    """Log lines quote outside text (file names, server messages): made inert like the rest."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))


def _flag_settings(opts: dict[str, Any]) -> dict[str, Any]:
    return {key: opts.get(name) for name, key in GLOBAL_FLAGS.items() if key is not None}


def _dispatch(opts: dict[str, Any], config: Config) -> int:
    command = opts.get("command") or "chat"
    if command == "config":
        print(render_config(config))
        return 0
    if command == "transcripts":
        return _run_transcripts(opts, config)
    if command == "service":
        return _run_service(opts)
    if command == "devices":
        from voice_agent.devices import describe

        print(inert(describe(config.audio.input_device, config.audio.output_device)))
        return 0
    inputs: list[Path] = opts.get("input", [])
    if inputs:
        if opts.get("output_dir") is None:
            raise VoiceAgentError("--input needs --output-dir DIR for the spoken replies")
        from voice_agent.session import run_files

        return asyncio.run(run_files(config, inputs, opts["output_dir"]))
    if opts.get("text"):
        from voice_agent.session import run_text

        return asyncio.run(run_text(config, mute=bool(opts.get("mute"))))
    from voice_agent.session import run_live

    return asyncio.run(run_live(config, push_to_talk=bool(opts.get("push_to_talk"))))


def toml_value(value: object) -> str:
    """A setting's value as TOML: JSON's strings, numbers and arrays are TOML too; a table
    is written inline (``{ a = 1 }``), its keys quoted."""
    if isinstance(value, dict):
        inner = ", ".join(f"{json_text(str(k))} = {toml_value(v)}" for k, v in value.items())
        return f"{{ {inner} }}" if inner else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json_text(value)


def render_config(config: Config) -> str:
    """The effective configuration as TOML; keys are named by their variable, never shown."""
    lines = [f"# effective configuration (user config file: {user_config_path()})"]
    for section, values in as_dict(config).items():
        lines.append(f"\n[{section}]")
        for name, value in values.items():
            if name == "base_url":
                value = shown_url(value)
            if isinstance(value, Secret):
                lines.append(f"# {name} is set (value hidden)" if value else f'{name} = ""')
            else:
                lines.append(f"{name} = {toml_value(value)}")
        if section == "llm":
            named = values["api_key_env"]
            for key_env in [named] if named else ["OPENROUTER_API_KEY", "OPENAI_API_KEY"]:
                state = "set (value hidden)" if os.environ.get(key_env) else "not set"
                lines.append(f"# API key: {key_env} is {state}")
    lines.append(f"\n# transcripts folder: {config.transcripts_dir}")
    return "\n".join(lines)
