"""What the sandbox actually enforces (course.grading.sandbox), and the feedback HTML sanitiser.

Each test runs a small Python program inside ``run_sandboxed`` and checks from outside what it
could or could not do. ``scripts/setup-system.sh`` installs bubblewrap; without it these tests
fail on Linux with the reason, and are skipped with it elsewhere.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import textwrap
import time
from pathlib import Path

import pytest

from course.grading import sandbox
from course.grading.sandbox import (
    SandboxUnavailableError,
    isolation_available,
    run_sandboxed,
    sanitize_feedback_html,
    sanitize_html,
)

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

pytestmark = pytest.mark.sandbox  # tests/conftest.py: fails on Linux without it, skips elsewhere


def run_py(code: str, workdir: Path, **kw):
    kw.setdefault("timeout", 60)
    return run_sandboxed([PY, "-c", textwrap.dedent(code)], workdir=workdir, **kw)


def test_runs_a_command_and_captures_its_output(tmp_path):
    res = run_py("""
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
        open("made.txt", "w").write("inside")
        raise SystemExit(3)
    """, tmp_path)
    assert res.returncode == 3 and not res.timed_out and res.reason == ""
    assert res.stdout == "to stdout\n" and res.stderr == "to stderr\n"
    assert (tmp_path / "made.txt").read_text() == "inside"
    assert res.seconds > 0


def test_isolation_available_describes_the_mechanism():
    ok, why = isolation_available()
    assert ok is True and "bubblewrap" in why


def test_runs_unprivileged_with_no_capabilities(tmp_path):
    res = run_py("""
        import os
        caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")]
        print(os.getuid(), os.geteuid(), ",".join(caps))
        print(len([p for p in os.listdir("/proc") if p.isdigit()]))
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    ids, nprocs = res.stdout.split("\n")[:2]
    uid, euid, caps = ids.split()
    assert set(caps.split(",")) == {"0000000000000000"}  # no capability at all
    if os.geteuid() == 0:
        assert int(uid) != 0 and int(euid) != 0
    assert int(nprocs) <= 3  # its own pid namespace: bwrap's init, the command (and ps)


def test_no_network_not_even_the_hosts_loopback(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    try:
        res = run_py(f"""
            import socket
            for address in [("127.0.0.1", {port}), ("1.1.1.1", 53), ("8.8.8.8", 443)]:
                try:
                    socket.create_connection(address, timeout=3).close()
                    print("CONNECTED", address)
                except OSError as err:
                    print("refused", address, err.errno)
            try:
                socket.getaddrinfo("pypi.org", 443)
                print("RESOLVED")
            except OSError:
                print("no dns")
        """, tmp_path)
    finally:
        server.close()
    assert res.returncode == 0, res.stderr
    assert "CONNECTED" not in res.stdout and "RESOLVED" not in res.stdout
    assert res.stdout.count("refused") == 3


def test_cannot_see_the_repository_home_or_a_planted_file(tmp_path):
    secret_dir = tmp_path / "instructor"
    secret_dir.mkdir()
    secret = secret_dir / "gradebook.db"
    secret.write_text("SECRET-GRADES")
    secret.chmod(0o644)
    work = tmp_path / "work"
    targets = [str(secret), str(ROOT / "pyproject.toml"), str(ROOT / "source"),
               str(ROOT / "tests" / "test_sandbox.py"), str(ROOT / "autograder"),
               "/root/.bashrc", "/etc/shadow", str(Path.home() / ".ssh")]
    res = run_py(f"""
        import os
        for path in {targets!r}:
            try:
                if os.path.isdir(path):
                    print("LISTED", path, os.listdir(path))
                else:
                    print("READ", path, open(path).read()[:20])
            except OSError as err:
                print("denied", path, err.errno)
        print("ROOT", sorted(os.listdir({str(ROOT)!r})))
    """, work)
    assert res.returncode == 0, res.stderr
    assert "READ" not in res.stdout and "LISTED" not in res.stdout and "SECRET" not in res.stdout
    assert res.stdout.count("denied") == len(targets)
    # of the repository only the course package and the virtual environment are there
    visible = eval(res.stdout.split("ROOT ", 1)[1])
    assert set(visible) <= {"course", ".venv"}


def test_cannot_write_outside_workdir(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)
    work = tmp_path / "work"
    targets = [str(outside / "x"), str(ROOT / "course" / "x.py"), str(Path(PY).parent / "x"),
               "/usr/x", "/etc/x", str(tmp_path / "x")]
    res = run_py(f"""
        for path in {targets!r}:
            try:
                open(path, "w").write("pwned")
                print("WROTE", path)
            except OSError as err:
                print("denied", path, err.errno)
        open("/tmp/scratch", "w").write("private /tmp is fine")
        open("inside.txt", "w").write("ok")
    """, work)
    assert res.returncode == 0, res.stderr
    assert "WROTE" not in res.stdout
    assert not (outside / "x").exists() and not (ROOT / "course" / "x.py").exists()
    assert (work / "inside.txt").read_text() == "ok"
    assert not Path("/tmp/scratch").exists() or Path("/tmp/scratch").read_text() != (
        "private /tmp is fine")


def test_wall_clock_timeout_kills(tmp_path):
    start = time.monotonic()
    res = run_py("import time\nwhile True:\n    time.sleep(1)", tmp_path, timeout=2)
    assert res.timed_out and "timeout" in res.reason
    assert time.monotonic() - start < 15


def test_cpu_time_limit(tmp_path):
    res = run_py("while True:\n    pass", tmp_path, timeout=60, cpu_seconds=1)
    assert not res.timed_out
    assert res.returncode != 0 and "CPU" in res.reason, res


def test_memory_limit(tmp_path):
    res = run_py("""
        try:
            block = bytearray(3 * 1024**3)
            print("ALLOCATED")
        except MemoryError:
            print("memory error")
    """, tmp_path, memory_mb=1024)
    assert "ALLOCATED" not in res.stdout and "memory error" in res.stdout


def test_process_limit_stops_a_fork_bomb_and_nothing_survives(tmp_path, processes_with):
    marker = "forkbomb-" + tmp_path.name
    res = run_py(f"""
        import os, time
        children = 0
        for _ in range(10_000):
            try:
                if os.fork() == 0:
                    os.setsid()
                    time.sleep(300)  # {marker}
                    os._exit(0)
                children += 1
            except OSError:
                break
        print(children)
    """, tmp_path, max_procs=40, timeout=60)
    assert res.returncode == 0, res.stderr
    assert 0 < int(res.stdout) < 40
    assert not processes_with(marker)


def test_output_limit(tmp_path):
    res = run_py("while True:\n    print('x' * 1000, end='')", tmp_path, max_output_bytes=50_000,
                 timeout=60)
    assert "output limit" in res.reason and not res.timed_out
    assert len(res.stdout) <= 50_000


def test_file_size_limit(tmp_path):
    res = run_py("""
        with open("big", "wb") as f:
            for _ in range(100):
                f.write(b"x" * 1024 * 1024)
    """, tmp_path, file_mb=8)
    assert res.returncode != 0
    assert (tmp_path / "big").stat().st_size <= 8 * 1024 * 1024


def test_detached_processes_die_with_the_call(tmp_path, processes_with):
    marker = "detached-" + tmp_path.name
    res = run_py(f"""
        import os, subprocess, time
        # a double fork + setsid, and a nohup'd shell: both wait, then write
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(2)
                open("late-python.txt", "w").write("{marker}")
                os._exit(0)
            os._exit(0)
        subprocess.Popen(["/bin/sh", "-c", "sleep 2; echo {marker} > late-shell.txt"],
                         start_new_session=True, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("parent done")
    """, tmp_path)
    assert res.returncode == 0 and "parent done" in res.stdout
    assert not processes_with(marker)
    time.sleep(3)
    assert not (tmp_path / "late-python.txt").exists()
    assert not (tmp_path / "late-shell.txt").exists()


def test_workdir_is_given_back_without_links_or_setuid_bits(tmp_path):
    res = run_py("""
        import os, stat
        os.symlink("/etc/passwd", "link-to-passwd")
        os.symlink("/work", "link-to-dir")
        os.mkfifo("fifo")
        open("tool", "w").write("#!/bin/sh\\n")
        os.chmod("tool", 0o6755)
        os.makedirs("sub/deeper")
        os.symlink("../../tool", "sub/deeper/link")
    """, tmp_path)
    assert res.returncode == 0, res.stderr
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert left == ["sub", "sub/deeper", "tool"]
    st = (tmp_path / "tool").stat()
    assert st.st_uid == os.getuid() and not st.st_mode & (stat.S_ISUID | stat.S_ISGID)


def test_the_environment_is_clean(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTRUCTOR_TOKEN", "s3cret")
    res = run_py("import os; print(sorted(os.environ))", tmp_path, env={"EXTRA": "1"})
    names = eval(res.stdout)
    assert "INSTRUCTOR_TOKEN" not in names and "EXTRA" in names


def test_unavailable_isolation_raises_unless_isolate_false(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox, "_probe_cache", (False, "no bubblewrap in this test"))
    with pytest.raises(SandboxUnavailableError, match="no bubblewrap in this test"):
        run_py("print(1)", tmp_path)
    res = run_py("print(1)", tmp_path, isolate=False)
    assert res.returncode == 0 and res.stdout == "1\n"


def test_isolate_false_still_has_timeout_and_output_cap(tmp_path):
    res = run_py("while True:\n    print('y' * 100)", tmp_path, isolate=False, timeout=20,
                 max_output_bytes=10_000)
    assert "output limit" in res.reason
    res = run_py("import time; time.sleep(30)", tmp_path, isolate=False, timeout=1)
    assert res.timed_out


# --------------------------------------------------------------------------- HTML sanitiser

ATTACKS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<img src=x OnErRoR = 'alert(1)'>",
    "<svg onload=alert(1)><circle r=1 /></svg>",
    "<svg><script>alert(1)</script></svg>",
    "<svg><a xlink:href='javascript:alert(1)'><text>x</text></a></svg>",
    "<svg><a><animate attributeName=href values=javascript:alert(1) /><text>y</text></a></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<a href='  jav&#x09;ascript:alert(1)'>link</a>",
    "<a href='JaVaScRiPt:alert(1)'>link</a>",
    "<a href='vbscript:msgbox(1)'>link</a>",
    "<iframe src='javascript:alert(1)'></iframe>",
    "<iframe srcdoc='<script>alert(1)</script>'></iframe>",
    "<object data='data:text/html,<script>alert(1)</script>'></object>",
    "<embed src='data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=='>",
    "<form action='javascript:alert(1)'><button>go</button></form>",
    "<button formaction='javascript:alert(1)'>x</button>",
    "<meta http-equiv='refresh' content='0;url=javascript:alert(1)'>",
    "<base href='javascript:alert(1)//'>",
    "<body onload=alert(1)>",
    "<div style='background:url(javascript:alert(1))'>x</div>",
    "<details open ontoggle=alert(1)>",
    "<noscript><p title='</noscript><img src=x onerror=alert(1)>'></noscript>",
    "<template><script>alert(1)</script></template>",
    "</pre></div><script>alert(1)</script>",
    "<a href='data:text/html,<script>alert(1)</script>'>d</a>",
    "<link rel=import href='data:text/html,<script>alert(1)</script>'>",
]


def _parsed(html: str):
    from bleach._vendor import html5lib

    return html5lib.parse(html, treebuilder="etree", namespaceHTMLElements=False)


def _assert_safe(html: str) -> None:
    doc = _parsed(html)
    for el in doc.iter():
        tag = el.tag.rsplit("}", 1)[-1].lower() if isinstance(el.tag, str) else ""
        assert tag not in {"script", "iframe", "object", "embed", "form", "base", "animate",
                           "set", "noscript", "template"}, tag
        for key, value in el.attrib.items():
            name = key.rsplit("}", 1)[-1].lower()
            assert not name.startswith("on"), (tag, key)
            assert name not in ("srcdoc", "formaction"), (tag, key)
            compact = "".join(value.split()).lower()
            assert "javascript:" not in compact and "vbscript:" not in compact, (tag, key, value)
            if name in ("href", "src", "data", "action") and compact.startswith("data:"):
                assert tag == "img" and compact.startswith("data:image/"), (tag, key, value)
        if tag == "meta" and "http-equiv" in el.attrib:
            assert el.attrib["http-equiv"] == "Content-Security-Policy"
    csp = [el for el in doc.iter() if el.tag == "meta"
           and el.attrib.get("http-equiv") == "Content-Security-Policy"]
    assert len(csp) == 1 and "script-src 'none'" in csp[0].attrib["content"]


@pytest.mark.parametrize("payload", ATTACKS)
def test_sanitize_html_removes_each_script_vector(payload):
    page = f"<!DOCTYPE html><html><head><title>t</title></head><body><p>before</p>{payload}" \
           f"<p>after</p></body></html>"
    clean = sanitize_html(page)
    _assert_safe(clean)
    assert "before" in clean
    assert "alert(1)" not in clean.replace("&lt;", "<") or "<script" not in clean.lower()


def test_sanitize_html_keeps_the_feedback_readable():
    png = "data:image/png;base64,iVBORw0KGgo="
    page = (f"<html><head><style>.score {{ color: green }}</style></head><body>"
            f"<h1>Feedback</h1><table><tr><td class='score'>2 / 2</td></tr></table>"
            f"<img src='{png}' alt='figure'><a href='#cell-3'>cell</a>"
            f"<pre>Traceback: 1 &lt; 2</pre></body></html>")
    clean = sanitize_html(page)
    _assert_safe(clean)
    for kept in ("<h1>Feedback</h1>", "2 / 2", png, 'href="#cell-3"', ".score { color: green }",
                 "1 &lt; 2"):
        assert kept in clean, kept


def test_sanitize_feedback_html_on_a_real_nbconvert_page(tmp_path):
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("print('hi')")
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={
            "text/html": "<b>bold</b><script>alert('html output')</script>"
                         "<img src=x onerror=alert(2)>",
            "text/plain": "x"}),
        nbformat.v4.new_output("display_data", data={
            "application/javascript": "alert('js output')", "text/plain": "js"}),
        nbformat.v4.new_output("stream", name="stdout", text="<script>alert(3)</script>\n"),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title <img src=y onerror=alert(4)>"), cell]
    body, _ = HTMLExporter().from_notebook_node(nb)
    assert "<script>alert('html output')</script>" in body  # nbconvert leaves it in
    page = tmp_path / "feedback.html"
    page.write_text(body, encoding="utf-8")
    sanitize_feedback_html(page)
    clean = page.read_text(encoding="utf-8")
    _assert_safe(clean)
    assert "<b>bold</b>" in clean and "Title" in clean
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in clean  # stream text stays visible, escaped


def test_sanitize_feedback_html_refuses_a_link(tmp_path):
    target = tmp_path / "target.html"
    target.write_text("<p>x</p>")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    with pytest.raises(ValueError):
        sanitize_feedback_html(link)
    assert target.read_text() == "<p>x</p>"
