"""`tldr generate` against a real HTTP server on 127.0.0.1 speaking the OpenAI
chat-completions protocol (http.server in a thread, ephemeral port), scripted to fail the
ways real endpoints fail. Nothing here reaches the internet; the openai client's backoff
waits are recorded, not slept (the `sleeps` fixture).
"""

import json
import re
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import openai._base_client as openai_base
import pytest
from typer.testing import CliRunner

from labshared.errors import ConfigError
from tldr_cli.cli import app
from tldr_cli.config import GenerateConfig
from tldr_cli.generate import REPLIES_FILE, run
from tldr_cli.growlist import generate_list
from tldr_cli.llm import ChatClient, LLMUnavailableError, ReplyCache, redact_url
from tldr_cli.prompts import PromptSet, load_prompts, parse_word_reply
from tldr_cli.wordlists import load_wordlists, word_key

SECRET = "sk-test-DO-NOT-WRITE-9f8e7d"
_ASK = re.compile(r"List (\d+) (?:more )?different (.*?)\.\n")
_EXCLUDE = re.compile(r"Do not repeat any of these: (\[.*?\])\n", re.DOTALL)


def words_for(user_prompt: str) -> list[str]:
    """What the fake LLM answers: `n` fresh words derived from the prompt alone (so the
    server is stateless and a replayed prompt gets the same answer)."""
    m = _ASK.search(user_prompt)
    n, description = int(m.group(1)), m.group(2)
    ex = _EXCLUDE.search(user_prompt)
    start = len(json.loads(ex.group(1))) if ex else 0
    tag = description.split()[0].strip("'(")
    return [f"{tag} item {start + j}" for j in range(n)]


class FakeLLM:
    """A scripted chat-completions server. `script` is consumed one action per request;
    when it is empty every request is answered with `words_for(prompt)`.

    Actions: ("ok", text) | ("429", retry_after) | ("429h", {header: value}) | ("500",)
    | ("malformed",) | ("html",) | ("drop",) | ("slow", seconds) | ("401",). `log` records
    every request with its action; `answered` lists the user prompts that got a 200 chat
    completion.
    """

    def __init__(self, script=()):
        self.script = list(script)
        self.log: list[dict] = []
        self.answered: list[str] = []
        self.lock = threading.Lock()
        self.default = "ok"
        self.release = threading.Event()  # ends a "slow" reply's wait (set on close)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                with fake.lock:
                    action = fake.script.pop(0) if fake.script else (fake.default,)
                    fake.log.append(
                        {
                            "path": self.path,
                            "action": action[0],
                            "body": body,
                            "auth": self.headers.get("Authorization"),
                        }
                    )
                fake.respond(self, action, user, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def respond(self, h, action, user, body):
        kind = action[0]
        if kind == "drop":
            h.close_connection = True
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if kind == "slow":  # waits past the client's timeout, whatever the machine's speed
            self.release.wait(action[1])
            kind = "ok"
            action = ("ok",)
        if kind == "ok":
            text = action[1] if len(action) > 1 else json.dumps(words_for(user))
            with self.lock:
                self.answered.append(user)
            payload = {
                "id": f"chatcmpl-{len(self.log)}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": text},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
            }
            self._send(h, 200, json.dumps(payload).encode())
        elif kind == "429":
            self._send(
                h, 429, b'{"error": {"message": "rate limited"}}', {"Retry-After": action[1]}
            )
        elif kind == "429h":
            self._send(h, 429, b'{"error": {"message": "rate limited"}}', action[1])
        elif kind == "500":
            self._send(h, 500, b'{"error": {"message": "boom"}}')
        elif kind == "401":
            self._send(h, 401, b'{"error": {"message": "bad key"}}')
        elif kind == "malformed":
            self._send(h, 200, b'{"id": "x", "choices": [{"message": {"content": "[\\"a')
        elif kind == "html":
            self._send(h, 200, b"<html>Bad gateway</html>", ctype="text/html")
        else:  # pragma: no cover
            raise AssertionError(kind)

    @staticmethod
    def _send(h, status, data, headers=None, ctype="application/json"):
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, str(v))
        h.end_headers()
        h.wfile.write(data)


@pytest.fixture
def llm():
    server = FakeLLM()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep the shared reply cache inside this test's tmp folder."""
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))


def _openai_sleep(monkeypatch, sleep):
    """What the openai client's retry loop calls to wait (`_base_client` sleeps through its
    module's `time.sleep`)."""
    monkeypatch.setattr(openai_base, "time", SimpleNamespace(sleep=sleep, time=time.time))


@pytest.fixture(autouse=True)
def sleeps(monkeypatch):
    """The waits of the openai client between retries, recorded instead of slept, with its
    jitter (`1 - 0.25 * random()`) at 1 so they are exact."""
    waits: list[float] = []
    _openai_sleep(monkeypatch, waits.append)
    monkeypatch.setattr(openai_base, "random", lambda: 0.0)
    return waits


def client_for(server, attempts=4, timeout=5.0):
    return ChatClient("fake-model", server.base_url, "k", timeout=timeout, max_retries=attempts - 1)


MSG = [{"role": "user", "content": "List 3 different toy words.\nAnswer."}]


# --------------------------------------------------------------------------- replies
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('["Robin", "Blue Jay"]', ["Robin", "Blue Jay"]),
        ('Sure! Here they are:\n```json\n["Robin", "Wren",]\n```\nEnjoy.', ["Robin", "Wren"]),
        ('Here: ["Robin", "Wren"] -- hope it helps', ["Robin", "Wren"]),
        ('{"words": ["Robin", "Wren"]}', ["Robin", "Wren"]),
        ('[{"name": "Robin"}, {"name": "Wren"}]', ["Robin", "Wren"]),
        ("['Robin', 'Wren']", ["Robin", "Wren"]),
        ("\u201cRobin\u201d", None),
        ('["Robin", "Wren", "Great Ti', ["Robin", "Wren"]),  # cut by the token limit
        ("Here are birds:\n1. Robin\n2. Blue Jay\n3) Wren.", ["Robin", "Blue Jay", "Wren"]),
        ("- Robin\n- Wren\n* Finch", ["Robin", "Wren", "Finch"]),
        ("Robin, Wren, Finch, Jay", ["Robin", "Wren", "Finch", "Jay"]),
        ("I am sorry, but I cannot help with listing birds today.", None),
        ("", None),
    ],
)
def test_parse_word_reply_repairs_or_gives_up(text, expected):
    assert parse_word_reply(text) == expected


def test_parse_drops_prose_items():
    long = "this is a very long sentence that is certainly not a word at all"
    assert parse_word_reply(json.dumps(["Robin", long, 7, "Wren"])) == ["Robin", "Wren"]


def test_retry_after_header_forms_are_honoured(llm, sleeps, monkeypatch):
    now = float(int(time.time()))  # the client's clock, frozen: the date form is exact
    monkeypatch.setattr(openai_base, "time", SimpleNamespace(sleep=sleeps.append, time=lambda: now))
    date = formatdate(now + 30, usegmt=True)
    llm.script = [
        ("429h", {"Retry-After": "3"}),
        ("429h", {"retry-after-ms": "250", "Retry-After": "9"}),
        ("429h", {"Retry-After": date}),
        ("ok", '["a"]'),
    ]
    assert client_for(llm).complete(MSG, temperature=1.0, max_tokens=None)["content"] == '["a"]'
    assert sleeps == [3.0, 0.25, 30.0]


def test_redact_url_drops_credentials():
    assert redact_url("https://user:pw@host:8000/v1?key=abc") == "https://host:8000/v1"


# --------------------------------------------------------------------------- retry policy
def test_429_waits_retry_after_then_succeeds(llm, sleeps):
    llm.script = [("429", "2"), ("ok", '["a", "b"]')]
    client = client_for(llm)
    reply = client.complete(MSG, temperature=0.5, max_tokens=64)
    assert reply["content"] == '["a", "b"]'
    assert sleeps == [2.0]  # the server's Retry-After, not our backoff
    assert [e["action"] for e in llm.log] == ["429", "ok"]
    assert client.stats.requests == 2 and client.stats.retries == 1
    assert llm.log[0]["body"]["temperature"] == 0.5 and llm.log[0]["body"]["max_tokens"] == 64


def test_5xx_malformed_html_and_dropped_connections_back_off_exponentially(llm, sleeps):
    llm.script = [("500",), ("malformed",), ("html",), ("drop",), ("ok", '["a"]')]
    reply = client_for(llm, attempts=5).complete(MSG, temperature=1.0, max_tokens=None)
    assert reply["content"] == '["a"]'
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # the client's backoff: 0.5 s doubling (cap 8 s)
    assert [e["action"] for e in llm.log] == ["500", "malformed", "html", "drop", "ok"]
    assert "max_tokens" not in llm.log[-1]["body"]


def test_timeout_is_retried(llm, sleeps):
    # the slow reply waits until the server closes (5 min at most: a hang guard); the
    # timeout is generous so that the retried reply never misses it on a loaded machine
    llm.script = [("slow", 300.0), ("ok", '["a"]')]
    reply = client_for(llm, timeout=5.0).complete(MSG, temperature=1.0, max_tokens=None)
    assert reply["content"] == '["a"]' and len(sleeps) == 1


def test_gives_up_after_max_attempts_with_resume_hint(llm, sleeps):
    llm.default = "500"
    with pytest.raises(LLMUnavailableError, match="3 attempts failed.*--resume"):
        client_for(llm, attempts=3).complete(MSG, temperature=1.0, max_tokens=None)
    assert len(llm.log) == 3 and len(sleeps) == 2


def test_auth_error_is_not_retried_and_names_the_fix(llm):
    llm.script = [("401",)]
    with pytest.raises(ConfigError, match="HTTP 401.*OPENAI_API_KEY"):
        client_for(llm).complete(MSG, temperature=1.0, max_tokens=None)
    assert len(llm.log) == 1


def test_excessive_retry_after_fails_instead_of_hanging(llm):
    llm.script = [("429", "100000")]
    with pytest.raises(LLMUnavailableError, match="Retry-After"):
        client_for(llm).complete(MSG, temperature=1.0, max_tokens=None)


# --------------------------------------------------------------------------- list growth
def _cfg(**kw) -> GenerateConfig:
    base = dict(preset="toy", model="fake-model", target=6, per_call=3, max_retries=2)
    base.update(kw)
    return GenerateConfig(**base)


def _grow(server, tmp_path, cfg, name="small digit"):
    client = client_for(server)
    cache = ReplyCache(tmp_path / REPLIES_FILE, shared=False)
    return generate_list(
        client,
        cache,
        cfg,
        PromptSet(),
        dataset="toy",
        kind="classes",
        name=name,
        description="digits (test)",
        on_prompt=None,
    )


def test_list_grows_over_calls_dedupes_and_reasks_unreadable(llm, tmp_path):
    llm.script = [
        ("ok", '["One", "two", "ONE"]'),  # a repeat inside a reply
        ("ok", "Sorry, I can only talk about the weather."),  # unreadable: re-ask
        ("ok", '["Two", "three", "four"]'),  # "Two" repeats across replies
        ("ok", '["five", "six"]'),
    ]
    res = _grow(llm, tmp_path, _cfg())
    assert res.words == ["One", "two", "three", "four", "five", "six"]
    assert res.calls == 4 and res.unreadable_replies == 1 and res.stop_reason == "target reached"
    prompts = [e["body"]["messages"][-1]["content"] for e in llm.log]
    assert "could not be read" in prompts[2] and "could not be read" not in prompts[3]
    assert '["One", "two"]' in prompts[2]  # later calls list the words so far
    assert "List 3 more" in prompts[2] and "List 2 more" in prompts[3]


def test_list_stops_when_nothing_new_comes(llm, tmp_path):
    llm.script = [("ok", '["a", "b"]')] + [("ok", '["A", "b"]')] * 10
    res = _grow(llm, tmp_path, _cfg(patience=2))
    assert res.words == ["a", "b"] and res.calls == 3
    assert "no new word" in res.stop_reason


def test_list_respects_the_call_limit(llm, tmp_path):
    llm.script = [("ok", f'["w{i}"]') for i in range(20)]
    res = _grow(llm, tmp_path, _cfg(target=50, max_calls=4))
    assert len(res.words) == 4 and res.calls == 4 and "call limit" in res.stop_reason


# --------------------------------------------------------------------------- whole runs
def test_run_writes_lists_with_provenance_and_cache(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    cfg = _cfg(base_url=llm.base_url, temperature=0.7)
    wl, metrics = run(cfg, tmp_path / "run", use_cache=False)
    assert wl.class_names == ["small digit", "large digit"]
    assert all(len(v) == 6 for v in [*wl.classes.values(), *wl.spurious.values()])
    assert len(llm.answered) == 8  # 4 lists x 2 calls of 3 words
    assert wl.provenance["model"] == "fake-model" and wl.provenance["temperature"] == 0.7
    assert wl.provenance["requests"]["answered"] == 8
    assert wl.provenance["prompts"]["first"].startswith("List {n} different")
    assert load_wordlists(tmp_path / "run" / "wordlists.json") == wl
    lines = (tmp_path / "run" / REPLIES_FILE).read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(ln)["content"] for ln in lines)
    assert all(e["auth"] == f"Bearer {SECRET}" for e in llm.log)
    assert metrics["counts"]["classes"]["small digit"] == 6


def test_interrupted_run_resumes_without_repeating_a_request(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    run_dir = tmp_path / "run"
    llm.script = [("ok",)] * 3  # three answers, then the server only drops connections
    llm.default = "drop"
    with pytest.raises(LLMUnavailableError, match=f"--resume.*Run folder: {run_dir}"):
        run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    first = list(llm.answered)
    assert len(first) == 3
    assert len((run_dir / REPLIES_FILE).read_text().splitlines()) == 3

    llm.default = "ok"  # the endpoint comes back
    wl, _ = run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    second = llm.answered[3:]
    assert len(second) == 5  # only the 5 requests never answered before
    assert len(set(llm.answered)) == len(llm.answered) == 8  # no answered prompt twice
    assert not set(first) & set(second)
    # the words of the first, interrupted run are kept
    first_words = [w for p in first for w in words_for(p)]
    all_words = {word_key(w) for v in [*wl.classes.values(), *wl.spurious.values()] for w in v}
    assert {word_key(w) for w in first_words} <= all_words


def test_torn_last_cache_line_is_ignored(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    run_dir = tmp_path / "run"
    run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    path = run_dir / REPLIES_FILE
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    llm.answered.clear()
    wl, _ = run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    assert len(llm.answered) == 1  # only the torn reply is asked again
    assert all(json.loads(ln) for ln in path.read_text().splitlines()[-1:])


def test_shared_cache_serves_a_fresh_run_folder(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    cfg = _cfg(base_url=llm.base_url)
    wl1, _ = run(cfg, tmp_path / "a", use_cache=True)
    n = len(llm.log)
    wl2, _ = run(cfg, tmp_path / "b", use_cache=True)
    assert len(llm.log) == n and wl1.classes == wl2.classes
    wl3, _ = run(
        _cfg(base_url=llm.base_url, temperature=0.2),
        tmp_path / "c",
        use_cache=True,
    )
    assert len(llm.log) == 2 * n  # another temperature is another request


def test_import_mixes_files_and_generates_only_the_rest(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    (tmp_path / "small_digit.txt").write_text("# hand-made\none\nTwo\n\ntwo\n")
    (tmp_path / "bg.json").write_text(json.dumps({"spurious": {"0": ["lawn"], "brick": ["wall"]}}))
    cfg = _cfg(
        base_url=llm.base_url,
        from_file=(str(tmp_path / "small_digit.txt"), str(tmp_path / "bg.json")),
    )
    wl, metrics = run(cfg, tmp_path / "run", use_cache=False)
    assert wl.classes["small digit"] == ["one", "Two"]
    assert wl.spurious == {"grass": ["lawn"], "brick": ["wall"]}
    assert len(wl.classes["large digit"]) == 6  # generated
    assert {e["body"]["messages"][-1]["content"].split(".")[0] for e in llm.log} == {
        "List 3 different ways to name a handwritten digit from five to nine (e",
        "List 3 more different ways to name a handwritten digit from five to nine (e",
    }
    assert wl.provenance["source"] == "mixed"
    assert metrics["lists"]["classes.small digit"]["source"] == "file"


def test_import_without_model_needs_every_list(tmp_path):
    (tmp_path / "x.txt").write_text("one\n")
    cfg = GenerateConfig(preset="toy", from_file=(f"small digit={tmp_path / 'x.txt'}",))
    with pytest.raises(ConfigError, match=r"no words for classes\.large digit"):
        run(cfg, tmp_path / "run")


def test_import_rejects_unknown_list_names(tmp_path):
    (tmp_path / "x.txt").write_text("one\n")
    cfg = GenerateConfig(preset="toy", from_file=(f"tiny digit={tmp_path / 'x.txt'}",))
    with pytest.raises(ConfigError, match="no list 'tiny digit'.*classes.small digit"):
        run(cfg, tmp_path / "run")


def test_prompt_file_overrides_and_validation(tmp_path):
    good = tmp_path / "p.toml"
    good.write_text('first = "Give {n} {description}!"\n[descriptions]\nbrick = "walls"\n')
    p = load_prompts(good)
    assert p.first == "Give {n} {description}!" and p.descriptions == {"brick": "walls"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"first": "Give {count} words"}))
    with pytest.raises(ConfigError, match=r"prompts.first.*\{count\}|\['count'\]"):
        load_prompts(bad)
    (tmp_path / "bad2.json").write_text(json.dumps({"frist": "x"}))
    with pytest.raises(ConfigError, match="unknown field"):
        load_prompts(tmp_path / "bad2.json")


# --------------------------------------------------------------------------- CLI
def _files_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


def test_cli_end_to_end_against_local_server_never_writes_the_key(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    llm.script = [("429", "0"), ("500",)]
    out = tmp_path / "run"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"descriptions": {"grass": "lawn things"}}))
    args = [
        "generate",
        "--preset",
        "toy",
        "--model",
        "fake-model",
        "--base-url",
        llm.base_url,
        "--target",
        "4",
        "--per-call",
        "2",
        "--prompts",
        str(prompts),
        "--max-tokens",
        "0",
        "-o",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    wl = load_wordlists(out / "wordlists.json")
    assert all(len(v) == 4 for v in [*wl.classes.values(), *wl.spurious.values()])
    assert wl.spurious["grass"][0] == "lawn item 0"  # the override reached the prompt
    assert str(out / "wordlists.json") in result.stdout
    assert {"config.json", "metrics.json", "wordlists.json", REPLIES_FILE} <= {
        p.name for p in out.iterdir()
    }
    assert SECRET not in _files_text(out)
    assert SECRET not in _files_text(tmp_path / "cache")
    assert SECRET not in result.output
    assert llm.log[0]["auth"] == f"Bearer {SECRET}"
    assert all("max_tokens" not in e["body"] for e in llm.log)  # --max-tokens 0: not sent
    config = json.loads((out / "config.json").read_text())["config"]
    assert config["base_url"] == llm.base_url and config["target"] == 4

    # --resume replays everything from the run folder's cache: no new request
    n = len(llm.log)
    again = CliRunner().invoke(app, [*args, "--resume", "--no-cache"])
    assert again.exit_code == 0, again.output
    assert len(llm.log) == n
    assert load_wordlists(out / "wordlists.json").classes == wl.classes


def test_cli_refuses_a_used_run_folder_and_missing_key(llm, tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("")
    r = CliRunner().invoke(app, ["generate", "--offline-toy", "-o", str(out)])
    shown = " ".join(r.output.split())
    # a folder of other files is never a run to resume or overwrite (issue 18)
    assert r.exit_code == 1 and "is not a run folder" in shown and "it holds x" in shown
    assert (out / "x").is_file()
    r = CliRunner().invoke(
        app, ["generate", "--preset", "toy", "--model", "gpt-4o-mini", "-o", str(tmp_path / "r2")]
    )
    assert r.exit_code == 1 and "OPENAI_API_KEY is not set" in r.output
    assert not llm.log


def test_cli_dry_run_prints_prompts_and_sends_nothing(llm, tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "generate",
            "--preset",
            "waterbirds",
            "--model",
            "m",
            "--base-url",
            llm.base_url,
            "--dry-run",
        ],
    )
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    assert [q["list"] for q in shown["requests"]] == [
        "classes.landbird",
        "classes.waterbird",
        "spurious.land",
        "spurious.water",
    ]
    assert "landbird species" in shown["requests"][0]["messages"][1]["content"]
    assert not llm.log


def test_cli_offline_toy_needs_no_server(tmp_path):
    r = CliRunner().invoke(app, ["generate", "--offline-toy", "-o", str(tmp_path / "run")])
    assert r.exit_code == 0, r.output
    wl = load_wordlists(tmp_path / "run" / "wordlists.json")
    assert wl.dataset == "toy" and wl.provenance["source"] == "file"
    assert wl.provenance["files"][0]["path"] == "builtin:toy"
    assert "seven" in wl.provenance["files"][0]["provenance"]["noisy_words"]["classes.small digit"]
    assert len(wl.classes["small digit"]) == 38


def test_cli_show_prompts_and_other_key_variable(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", SECRET)
    r = CliRunner().invoke(
        app,
        [
            "generate",
            "--preset",
            "toy",
            "--model",
            "fake-model",
            "--base-url",
            llm.base_url,
            "--key-env-var",
            "MY_LLM_KEY",
            "--target",
            "2",
            "--per-call",
            "2",
            "--show-prompts",
            "--temperature",
            "0.3",
            "-o",
            str(tmp_path / "run"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "List 2 different ways to name a handwritten digit from zero to four" in r.output
    assert r.output.count("user:") == 4  # one request per list, each shown
    assert {e["auth"] for e in llm.log} == {f"Bearer {SECRET}"}
    assert {e["body"]["temperature"] for e in llm.log} == {0.3}
    assert SECRET not in _files_text(tmp_path / "run")


def test_ctrl_c_mid_run_keeps_replies_and_resume_asks_only_the_rest(llm, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    run_dir = tmp_path / "run"
    llm.script = [("ok",), ("ok",), ("500",)]  # the user presses Ctrl-C during the backoff

    def interrupt(seconds):
        raise KeyboardInterrupt

    _openai_sleep(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    assert len(llm.answered) == 2
    _openai_sleep(monkeypatch, lambda s: None)
    run(_cfg(base_url=llm.base_url), run_dir, use_cache=False)
    assert len(llm.answered) == 8 and len(set(llm.answered)) == 8


def test_cli_max_retries_and_timeout_reach_the_openai_client(llm, tmp_path, sleeps):
    """`--max-retries N`: N + 1 requests, then one red line with the resume hint, and the
    run folder kept for --resume; `--timeout` bounds each request."""
    llm.default = "500"
    base = ["generate", "--preset", "toy", "--model", "fake-model", "--base-url", llm.base_url]
    out = tmp_path / "run"
    r = CliRunner().invoke(app, [*base, "--max-retries", "1", "-o", str(out)])
    assert r.exit_code == 1 and "2 attempts failed" in r.output and "--resume" in r.output
    assert len(llm.log) == 2 and len(sleeps) == 1
    assert (out / "config.json").is_file()
    llm.default = "ok"
    llm.script = [("slow", 1.0)]  # longer than --timeout: the client retries it
    r = CliRunner().invoke(app, [*base, "--timeout", "0.2", "-o", str(out), "--resume"])
    assert r.exit_code == 0, r.output
    assert [e["action"] for e in llm.log[2:4]] == ["slow", "ok"] and len(sleeps) == 2
