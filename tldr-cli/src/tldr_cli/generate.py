"""`tldr generate`: build the class and spurious word lists with an LLM (or import them).

Paper step: "an LLM supplies ~200 words per class and ~200 per spurious value"
(method brief §0 step 3, §1a). The official repo has no generation code: its lists are
hard-coded in `TLDR:datasets/text_template.py`, 200 words per key, noisy on purpose.

Deviation: everything here is ours, because the paper's LLM and prompt were not
released. Each list is grown over several chat calls (`per_call` words asked each time,
the words so far listed as "do not repeat"), de-duplicated case-insensitively, until it
holds `target` words, `max_calls` calls were made, or `patience` calls in a row added
nothing new. A reply that cannot be read is re-asked with a reminder. Every completed
reply is cached (see `tldr_cli.llm.ReplyCache`) before its words are used, so a run
killed at any point resumes with `--resume` without repeating a request (the run folder
itself follows the one resume rule of `labshared.launch.start_run`). HTTP retries and
timeouts are the openai client's (`tldr_cli.llm`).

Output in the run folder: `wordlists.json` (schema in `tldr_cli.wordlists`), the reply
log `replies.jsonl`, `config.json` and `metrics.json`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape

from labshared.console import log, render_table
from labshared.errors import ConfigError
from labshared.runs import to_jsonable
from tldr_cli import __version__
from tldr_cli.config import GenerateConfig
from tldr_cli.growlist import ListResult, generate_list, now
from tldr_cli.llm import ChatClient, LLMUnavailableError, ReplyCache, redact_url
from tldr_cli.presets import DatasetPreset, get_preset
from tldr_cli.prompts import PromptSet, build_messages, load_prompts
from tldr_cli.wordimport import ImportedLists, import_lists
from tldr_cli.wordlists import WordLists, save_wordlists

WORDLISTS_FILE = "wordlists.json"
REPLIES_FILE = "replies.jsonl"
PLACEHOLDER_KEY = "EMPTY"  # what vLLM/Ollama accept when they check no key


def public_config(cfg: GenerateConfig) -> dict[str, Any]:
    """The config as recorded in config.json and provenance (base URL redacted)."""
    out = to_jsonable(cfg)
    out["base_url"] = redact_url(cfg.base_url)
    return out


def check(cfg: GenerateConfig) -> None:
    """Before the run folder is made: the prompts file and imported files read, every
    list has a source, and the API key is set when the LLM will be asked.

    Raises:
        ConfigError / DataLayoutError: naming the flag or file and the fix.
    """
    if make_plan(cfg).missing:
        resolve_api_key(cfg)


def resolve_api_key(cfg: GenerateConfig) -> str:
    """The key from the environment, or a placeholder for local servers that need none.

    Raises:
        ConfigError: talking to api.openai.com without a key.
    """
    key = os.environ.get(cfg.key_env_var, "").strip()
    if key:
        return key
    if cfg.base_url is None or "api.openai.com" in cfg.base_url:
        raise ConfigError(
            f"the environment variable {cfg.key_env_var} is not set; export your OpenAI "
            "key there (it is never written to disk), or pass --base-url for a local server"
        )
    log(
        f"[dim]{cfg.key_env_var} not set: sending a placeholder key to "
        f"{redact_url(cfg.base_url)}[/dim]"
    )
    return PLACEHOLDER_KEY


@dataclass
class Plan:
    """What a run will do, worked out before anything is asked or written."""

    prompts: PromptSet
    imported: ImportedLists
    preset: DatasetPreset | None  # None: the lists of a complete word-list file
    dataset: str
    lists: list[tuple[str, str, str]]  # (kind, name, description) of every list
    missing: list[tuple[str, str, str]]  # the lists the LLM is asked for


def make_plan(cfg: GenerateConfig) -> Plan:
    """Read the prompts and the imported files, and decide which lists the LLM makes.

    Raises:
        ConfigError: no preset and no complete word-list file, an unknown list name, or
            lists without a source (no --model).
    """
    prompts = load_prompts(cfg.prompts)
    imported = import_lists(list(cfg.from_file), get_preset(cfg.preset) if cfg.preset else None)
    if cfg.preset is not None:
        preset = get_preset(cfg.preset)
        dataset = preset.name
        lists = [(kind, spec.name, spec.description) for kind, spec in preset.lists]
    elif imported.full is not None:
        preset, full = None, imported.full
        dataset = full.dataset
        lists = [(k, n, "") for k, names in (("classes", full.classes), ("spurious", full.spurious))
                 for n in names]  # fmt: skip
    else:
        raise ConfigError(
            "--preset is required (waterbirds, celeba, spuco-animals or toy) unless "
            "--from-file is a complete word-list JSON"
        )
    missing = [(k, n, d) for k, n, d in lists if (k, n) not in imported.words]
    if missing and cfg.model is None:
        names = ", ".join(f"{k}.{n}" for k, n, _ in missing)
        raise ConfigError(
            f"no words for {names}: add them with --from-file or pass --model to generate them"
        )
    return Plan(prompts, imported, preset, dataset, lists, missing)


def run(
    cfg: GenerateConfig, run_dir: str | Path, *, use_cache: bool = True
) -> tuple[WordLists, dict[str, Any]]:
    """Build the word lists into `run_dir`; returns (word lists, metrics).

    Imported lists are used as given; every other list of the preset is generated with
    the LLM (`cfg.model`). Writes wordlists.json. `use_cache`: also read and write the
    shared reply cache (the run folder's replies.jsonl is always used).

    Raises:
        ConfigError: bad options, a list with no source, an endpoint refusing the request.
        LLMUnavailableError: the endpoint kept failing; cached replies survive for --resume.
    """
    run_dir = Path(run_dir)
    started = time.time()
    plan = make_plan(cfg)
    prompts, imported, preset, dataset = plan.prompts, plan.imported, plan.preset, plan.dataset
    lists: dict[tuple[str, str], list[str]] = dict(imported.words)
    per_list: dict[str, dict[str, Any]] = {
        f"{kind}.{name}": {"source": "file", "count": len(words)}
        for (kind, name), words in imported.words.items()
    }
    missing = plan.missing
    client = None
    if missing:
        client = ChatClient(
            cfg.model or "",
            cfg.base_url,
            resolve_api_key(cfg),
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
        )
        cache = ReplyCache(run_dir / REPLIES_FILE, shared=use_cache)
        if len(cache):
            log(f"resuming: {len(cache)} cached replies in {run_dir / REPLIES_FILE}")
        for kind, name, description in missing:
            res = _generate_one(client, cache, cfg, plan, kind, name, description, run_dir)
            lists[(kind, name)] = res.words
            per_list[f"{kind}.{name}"] = {
                "source": "llm",
                "count": len(res.words),
                "calls": res.calls,
                "cached_calls": res.cached_calls,
                "unreadable_replies": res.unreadable_replies,
                "stop_reason": res.stop_reason,
            }

    wordlists = _assemble(preset, imported, dataset, plan.lists, lists)
    stats = client.stats if client is not None else None
    provenance: dict[str, Any] = {
        "source": _source_kind(per_list),
        "tool": f"tldr-cli {__version__}",
        "created_at": now(),
        "model": cfg.model,
        "base_url": redact_url(cfg.base_url),
        "temperature": cfg.temperature if missing else None,
        "target_per_list": cfg.target,
        "per_call": cfg.per_call,
        "prompts": prompts.as_dict() if missing else None,
        "descriptions": {f"{k}.{n}": prompts.descriptions.get(n, d) for k, n, d in missing},
        "files": imported.sources,
        "lists": per_list,
        "counts": wordlists.counts(),
        "requests": None
        if stats is None
        else {
            "http_requests": stats.requests,
            "retries": stats.retries,
            "answered": stats.completed,
            "from_cache": stats.cached,
        },
    }
    wordlists = WordLists(**{**wordlists.__dict__, "provenance": provenance})
    out = save_wordlists(run_dir / WORDLISTS_FILE, wordlists)
    metrics = {
        "wordlists": str(out),
        "counts": wordlists.counts(),
        "lists": per_list,
        "requests": provenance["requests"],
        "seconds": round(time.time() - started, 3),
    }
    return wordlists, metrics


def _generate_one(
    client: ChatClient,
    cache: ReplyCache,
    cfg: GenerateConfig,
    plan: Plan,
    kind: str,
    name: str,
    description: str,
    run_dir: Path,
) -> ListResult:
    """One list from the LLM, with the run folder named in the errors that end a run."""
    log(f"generating {kind}.{name} with {cfg.model} ...")
    try:
        res = generate_list(
            client,
            cache,
            cfg,
            plan.prompts,
            dataset=plan.dataset,
            kind=kind,
            name=name,
            description=description,
            on_prompt=_print_prompt if cfg.show_prompts else None,
        )
    except LLMUnavailableError as exc:
        raise LLMUnavailableError(f"{exc}. Run folder: {run_dir}") from None
    except KeyboardInterrupt:
        log(
            f"[yellow]interrupted; {len(cache)} replies are kept in {cache.path}: continue "
            f"with the same options plus --output-dir {run_dir} --resume[/yellow]"
        )
        raise
    short = "" if len(res.words) >= cfg.target else f" [yellow](short: {res.stop_reason})[/yellow]"
    log(f"  {kind}.{name}: {len(res.words)} words in {res.calls} calls{short}")
    return res


def lists_table(wordlists: WordLists, metrics: dict[str, Any]) -> str:
    """One row per list (`classes.<name>`, `spurious.<name>`): its words and where they
    came from (file or llm)."""
    rows = [
        [key, len(words), metrics["lists"][key]["source"]]
        for kind, lists in (("classes", wordlists.classes), ("spurious", wordlists.spurious))
        for name, words in lists.items()
        for key in [f"{kind}.{name}"]
    ]
    return render_table(["list", "words", "source"], rows, align="lrl")


def _source_kind(per_list: dict[str, dict[str, Any]]) -> str:
    kinds = {v["source"] for v in per_list.values()}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _assemble(
    preset: DatasetPreset | None,
    imported: ImportedLists,
    dataset: str,
    plan: list[tuple[str, str, str]],
    lists: dict[tuple[str, str], list[str]],
) -> WordLists:
    classes = {n: lists[(k, n)] for k, n, _ in plan if k == "classes"}
    spurious = {n: lists[(k, n)] for k, n, _ in plan if k == "spurious"}
    if preset is not None:
        return WordLists(
            dataset=dataset,
            classes=classes,
            spurious=spurious,
            class_anchors={s.name: s.anchor for s in preset.classes},
            spurious_anchors={s.name: s.anchor for s in preset.spurious},
            word_template=preset.word_template,
            pairs=preset.pairs_dict(),
        )
    full = imported.full
    assert full is not None
    return WordLists(
        dataset=dataset,
        classes=classes,
        spurious=spurious,
        class_anchors=full.class_anchors,
        spurious_anchors=full.spurious_anchors,
        word_template=full.word_template,
        pairs=full.pairs,
    )


def _print_prompt(messages: list[dict[str, str]]) -> None:
    for m in messages:
        log(f"[bold]{m['role']}:[/bold] {escape(m['content'])}", highlight=False)


def preview_prompts(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """The first request of every list the LLM would be asked for (for --dry-run)."""
    prompts = load_prompts(cfg.prompts)
    preset = get_preset(cfg.preset) if cfg.preset else None
    if preset is None:
        raise ConfigError("--dry-run needs --preset to know which lists to ask for")
    out = []
    for kind, spec in preset.lists:
        messages = build_messages(
            prompts,
            dataset=preset.name,
            kind=kind,
            name=spec.name,
            description=spec.description,
            n=min(cfg.per_call, cfg.target),
            so_far=[],
        )
        out.append({"list": f"{kind}.{spec.name}", "messages": messages})
    return out
