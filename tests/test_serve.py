"""gan-audit serve over HTTP (Starlette's TestClient): every route, the access token, CSRF,
the Host and Origin checks, path traversal, and writes from two tabs at once.

The run folder is the report tests' fixture (results.json of the digits audit, validity,
manifest, sample grids: no model runs) plus a labelling sample of 24 generated images.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the serve extra is not installed")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

from click.testing import CliRunner

with warnings.catch_warnings():  # Starlette 1.x suggests httpx2; httpx works the same here
    warnings.filterwarnings("ignore", message=".*httpx.*")
    from starlette.testclient import TestClient

from audit.cli import cli
from audit.labels import CANT_TELL, LABELS_FILE, SAMPLE_DIR, read_labels, sample_index
from audit.manifest import record_artifacts
from audit.report.review import read_review_log, verify_review_log
from audit.serve import labelling
from audit.serve.routes import create_app
from audit.serve.security import Guard
from tests.test_report import FIXTURE, make_run

PORT = 8765
BASE = f"http://127.0.0.1:{PORT}"
CHOICES = {"tone": ["light", "dark"], "stroke": ["thin", "thick"]}
N_LABEL = 24
SECRET = "never-served-secret"


@functools.lru_cache(maxsize=1)
def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images / 16.0


def _digit(k: int, *, tone: str, stroke: str) -> np.ndarray:
    """Digit ``k`` of scikit-learn's bundled set at 32 x 32, rendered as the demo plants its
    attributes (light: white ink on black, dark: the negation; thick: dilated 3 x 3), in
    [0, 1]: the images a perfect generator would draw for these groups."""
    from scipy.ndimage import maximum_filter

    digits = _digits()
    ink = np.kron(digits[k % len(digits)], np.ones((4, 4)))
    if stroke == "thick":
        ink = maximum_filter(ink, size=3)
    return 1.0 - ink if tone == "dark" else ink


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _grids(run: Path) -> None:
    """The report's sample grids, drawn from digits rendered in each group."""
    from audit.samples import images_to_grid

    for name, tone, stroke in (("generated-tone-light", "light", "thin"),
                               ("generated-tone-dark", "dark", "thin"),
                               ("real-lowest", "dark", "thick"),
                               ("real-highest", "light", "thin")):
        images = np.stack([_digit(k, tone=tone, stroke=stroke)[None] for k in range(16)])
        grid = images_to_grid(images, value_range=(0.0, 1.0))
        (run / "samples" / f"{name}.png").write_bytes(_png(grid.mean(axis=2) / 255))


def add_labelling_sample(run: Path, *, n: int = N_LABEL) -> Path:
    """The samples stage's labelling sample (index.json + one PNG per image), recorded in
    the manifest as the pipeline records samples/."""
    rng = np.random.default_rng(7)
    ids = [f"gen-0-{k}" for k in range(3 * n)]
    decoded = {c: [gs[int(rng.integers(len(gs)))] for _ in ids] for c, gs in CHOICES.items()}
    index, _ = sample_index(image_ids=ids, decoded=decoded, choices=CHOICES, n=n, seed=0)
    (run / SAMPLE_DIR).mkdir(parents=True, exist_ok=True)
    for item in index["items"]:
        k = int(item["image_id"].rsplit("-", 1)[1])
        image = _digit(k, tone=item["decoded"]["tone"], stroke=item["decoded"]["stroke"])
        (run / item["file"]).write_bytes(_png(image))
    (run / SAMPLE_DIR / "index.json").write_text(json.dumps(index), encoding="utf-8")
    _grids(run)
    record_artifacts(run, ["samples"])
    return run


def demo_run(path: Path) -> Path:
    """A run folder to serve: the report fixture and a labelling sample."""
    path.mkdir(parents=True, exist_ok=True)
    return add_labelling_sample(make_run(path))


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return demo_run(tmp_path / "run")


def _client(run: Path, guard: Guard | None = None) -> tuple[TestClient, Guard]:
    guard = guard or Guard.for_bind("127.0.0.1", PORT, token="test-token")
    return TestClient(create_app(run, guard=guard), base_url=BASE,
                      follow_redirects=False), guard


def _login(client: TestClient, guard: Guard) -> str:
    """Visit with the token (as the printed address does); returns the page's CSRF token."""
    first = client.get(f"/?token={guard.token}")
    assert first.status_code == 303 and first.headers["location"] == "/"
    return guard.csrf_token(client.cookies[f"gan-audit-{PORT}"])


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


@pytest.fixture
def client(run: Path) -> tuple[TestClient, str, Guard]:
    c, guard = _client(run)
    return c, _login(c, guard), guard


def _findings() -> list[dict]:
    return json.loads(FIXTURE.read_text())["findings"]


def _log_lines(run: Path) -> list[dict]:
    path = run / "review.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


# ---------------------------------------------------------------- pages

PAGES = [("/", "Verdict per protected concept"), ("/findings", "of 10 finding(s) shown"),
         ("/findings/F-REP-tone-dark", "Record the review"),
         ("/findings/F-REP-tone%2Bstroke-dark%2Bthick", "Example images"),
         ("/label", "Your name"), ("/static/serve.css", "focus-visible"),
         ("/static/serve.js", "data-key"), ("/static/report.css", "--bad")]


@pytest.mark.parametrize(("path", "marker"), PAGES)
def test_every_page_answers_once_the_token_is_given(client, path, marker):
    c, _, _ = client
    r = c.get(path)
    assert r.status_code == 200, r.text[:500]
    assert marker in r.text


def test_the_first_visit_trades_the_token_for_a_strict_httponly_cookie(run):
    c, guard = _client(run)
    r = c.get(f"/findings?severity=high&token={guard.token}")
    assert r.status_code == 303
    assert r.headers["location"] == "/findings?severity=high"  # the token leaves the address
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert guard.token not in cookie
    assert c.get("/findings?severity=high").status_code == 200


@pytest.mark.parametrize("how", ["none", "bad-token", "bad-cookie", "token-of-another-server"])
@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"), ("GET", "/findings"), ("GET", "/findings/F-REP-tone-dark"), ("GET", "/label"),
    ("GET", "/report"), ("GET", "/files/samples/real-lowest.png"), ("GET", "/static/serve.css"),
    ("POST", "/findings/F-REP-tone-dark/review"), ("POST", "/report"), ("POST", "/label"),
    ("POST", "/label/name")])
def test_without_the_token_every_route_is_refused(run, how, method, path):
    c, guard = _client(run)
    if how == "bad-token":
        path += ("&" if "?" in path else "?") + "token=" + "x" * len(guard.token)
    elif how == "bad-cookie":
        c.cookies.set(f"gan-audit-{PORT}", "forged-session")
    elif how == "token-of-another-server":
        other, other_guard = _client(run)
        _login(other, other_guard)
        c.cookies.set(f"gan-audit-{PORT}", next(iter(other_guard.sessions)))
    r = c.request(method, path, data={"status": "accepted", "reviewer": "X", "csrf": "0" * 64,
                                      "labeller": "X"})
    assert r.status_code == 403
    assert "token" in r.text and "Forbidden" in r.text
    assert "set-cookie" not in r.headers
    assert not (run / "review.jsonl").exists() and not (run / LABELS_FILE).exists()


def test_another_host_name_is_refused_even_with_the_token(run):
    """DNS rebinding: a site that points its own name at 127.0.0.1 sends its Host."""
    c, guard = _client(run)
    r = c.get(f"/?token={guard.token}", headers={"host": f"evil.example:{PORT}"})
    assert r.status_code == 403 and "address it printed" in r.text
    assert "set-cookie" not in r.headers


def test_pages_send_a_strict_content_security_policy(client):
    c, _, _ = client
    for path in ("/", "/findings", "/label", "/files/samples/real-lowest.png"):
        headers = c.get(path).headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        # not "no-referrer": Chrome then sends "Origin: null" with the app's own forms
        assert headers["referrer-policy"] == "same-origin"


# ---------------------------------------------------------------- findings


@pytest.mark.parametrize("query", [
    {"severity": "high"}, {"severity": "medium", "kind": "treatment"}, {"concept": "tone"},
    {"kind": "representation"}, {"status": "unreviewed"}, {"status": "accepted"}, {}])
def test_the_findings_filter_matches_results_json(client, query):
    c, _, _ = client
    html = c.get("/findings", params=query).text
    shown = re.findall(r'<tr data-finding="([^"]+)"', html)
    expected = [f["id"] for f in _findings()
                if all(f.get(k) == v for k, v in query.items() if k != "status")
                and query.get("status", "unreviewed") == "unreviewed"]
    assert sorted(shown) == sorted(expected)
    assert f"{len(expected)} of {len(_findings())} finding(s) shown" in html


@pytest.mark.parametrize(("sort", "order"), [("severity", "asc"), ("concept", "desc"),
                                             ("kind", "asc"), ("id", "desc")])
def test_the_findings_sort_by_column(client, sort, order):
    c, _, _ = client
    html = c.get("/findings", params={"sort": sort, "order": order}).text
    shown = re.findall(r'<tr data-finding="([^"]+)"', html)
    rank = {"high": 0, "medium": 1, "low": 2, "info": 3}
    key = {"severity": lambda f: (rank[f["severity"]], f["id"]),
           "concept": lambda f: (f["concept"], rank[f["severity"]], f["id"]),
           "kind": lambda f: (f["kind"], rank[f["severity"]], f["id"]),
           "id": lambda f: f["id"]}[sort]
    assert shown == [f["id"] for f in sorted(_findings(), key=key, reverse=order == "desc")]
    current = re.search(r'<th scope="col" aria-sort="(ascending|descending)"><a href="\?([^"]+)"',
                        html)
    assert current.group(1) == ("descending" if order == "desc" else "ascending")


def test_a_finding_page_shows_its_numbers_charts_and_images(client):
    c, _, _ = client
    html = c.get("/findings/F-REP-tone-dark").text
    f = next(f for f in _findings() if f["id"] == "F-REP-tone-dark")
    assert f["summary"].replace("'", "&#39;") in html
    assert "<svg" in html  # the representation chart of tone
    images = re.findall(r'<img src="(/files/[^"]+)" alt="([^"]+)"', html)
    assert ("/files/samples/generated-tone-dark.png" in [i[0] for i in images])
    assert all(alt.strip() for _, alt in images)
    for src, _ in images:
        assert c.get(src).headers["content-type"] == "image/png"
    assert c.get("/findings/F-NOPE").status_code == 404


# ---------------------------------------------------------------- reviews


def _review(c: TestClient, csrf: str, finding: str = "F-REP-tone-dark", **form) -> object:
    data = {"status": "accepted", "note": "checked the grids", "reviewer": "R. Viewer",
            "mitigation": "", "owner": "", "csrf": csrf, **form}
    from urllib.parse import quote

    return c.post(f"/findings/{quote(finding, safe='')}/review", data=data)


def test_a_review_lands_in_the_hash_chained_log(client, run):
    c, csrf, _ = client
    r = _review(c, csrf, "F-REP-tone+stroke-dark+thick", status="mitigated",
                note="a <b>note</b>\nover two lines", mitigation="rebalance", owner="ML team")
    assert r.status_code == 303
    assert r.headers["location"] == "/findings/F-REP-tone%2Bstroke-dark%2Bthick"
    [entry] = _log_lines(run)
    assert (entry["finding_id"], entry["status"], entry["reviewer"], entry["note"],
            entry["mitigation"], entry["owner"]) == (
        "F-REP-tone+stroke-dark+thick", "mitigated", "R. Viewer",
        "a <b>note</b>\nover two lines", "rebalance", "ML team")
    assert verify_review_log(run / "review.jsonl").ok
    page = c.get(r.headers["location"]).text
    assert "Recorded: F-REP-tone+stroke-dark+thick mitigated by R. Viewer" in page
    assert "a &lt;b&gt;note&lt;/b&gt;" in page and "<b>note</b>" not in page
    assert 'value="R. Viewer"' in page  # the name is remembered for the next review
    assert csrf_of(page) == csrf  # every form carries the session's CSRF token
    listed = c.get("/findings", params={"status": "mitigated"}).text
    assert re.findall(r'<tr data-finding="([^"]+)"', listed) == ["F-REP-tone+stroke-dark+thick"]


@pytest.mark.parametrize(("form", "message"), [
    ({"reviewer": "  "}, "reviewer&#39;s name is empty"),
    ({"status": "approved"}, "unknown review status"),
])
def test_a_bad_review_says_why_and_writes_nothing(client, run, form, message):
    c, csrf, _ = client
    r = _review(c, csrf, **form)
    assert r.status_code == 400 and message in r.text
    assert 'value="checked the grids"' not in r.text or "checked the grids" in r.text
    assert not (run / "review.jsonl").exists()


@pytest.mark.parametrize("how", ["missing", "wrong", "of-another-session", "cross-origin",
                                 "null-origin"])
def test_a_write_without_the_csrf_check_is_refused(client, run, how):
    c, csrf, guard = client
    headers = {}
    if how == "missing":
        csrf = ""
    elif how == "wrong":
        csrf = "0" * 64
    elif how == "of-another-session":
        other, _ = _client(run, guard)  # same server, another browser
        csrf = _login(other, guard)
    elif how == "cross-origin":
        headers = {"origin": "http://evil.example"}
    else:
        headers = {"origin": "null"}
    r = c.post("/findings/F-REP-tone-dark/review", headers=headers,
               data={"status": "accepted", "reviewer": "X", "csrf": csrf})
    assert r.status_code == 403, r.text[:300]
    assert "nothing was" in r.text or "refused" in r.text
    r = c.post("/label/name", headers=headers, data={"labeller": "X", "csrf": csrf})
    assert r.status_code == 403
    assert not (run / "review.jsonl").exists()


def test_the_same_origin_is_accepted(client, run):
    c, csrf, _ = client
    r = c.post("/findings/F-REP-tone-dark/review", headers={"origin": BASE},
               data={"status": "accepted", "reviewer": "X", "csrf": csrf})
    assert r.status_code == 303 and len(_log_lines(run)) == 1


def test_two_tabs_reviewing_at_once_both_land_and_the_log_verifies(run):
    """Eight writers (two browsers, four tabs each) post at the same moment."""
    browsers = [_client(run) for _ in range(2)]
    guard = browsers[0][1]
    tabs = []
    for c, _ in browsers:
        csrf = _login(c, guard if c is browsers[0][0] else browsers[1][1])
        tabs += [(c, csrf)] * 4
    ids = [f["id"] for f in _findings()][:8]
    start = threading.Barrier(len(tabs))
    codes: list[int] = []

    def post(k: int) -> None:
        c, csrf = tabs[k]
        start.wait()
        codes.append(_review(c, csrf, ids[k], note=f"tab {k}").status_code)

    threads = [threading.Thread(target=post, args=(k,)) for k in range(len(tabs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [303] * len(tabs)
    lines = _log_lines(run)
    assert sorted(e["note"] for e in lines) == sorted(f"tab {k}" for k in range(len(tabs)))
    check = verify_review_log(run / "review.jsonl")
    assert check.ok and check.entries == len(tabs)
    assert read_review_log(run).verification.ok


def test_rerendering_puts_the_reviews_in_the_report(client, run):
    c, csrf, _ = client
    assert c.get("/report").status_code == 404
    _review(c, csrf, note="seen in the browser")
    assert "older than the last review" not in c.get("/").text
    r = c.post("/report", data={"csrf": csrf})
    assert r.status_code == 303
    assert "Re-rendered report.html" in c.get("/").text
    report = c.get("/report")
    assert report.status_code == 200 and "seen in the browser" in report.text
    assert not (run / "report.pdf").exists()  # HTML unless asked
    _review(c, csrf, finding="F-TRT-tone-dark-real", note="later")
    os.utime(run / "report.html", (1, 1))
    assert "older than the last review" in c.get("/").text


# ---------------------------------------------------------------- files and traversal


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.png"
    secret.write_text(SECRET)
    return secret


TRAVERSALS = [
    "/files/samples/../results.json", "/files/samples/%2e%2e/results.json",
    "/files/samples/%2E%2E%2Fresults.json", "/files/samples/..%2f..%2fsecret.png",
    "/files/%2e%2e/secret.png", "/files/..%2Fsecret.png", "/files/samples/..%5c..%5csecret.png",
    "/files//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/%2f%2e%2e%2fsecret.png",
    "/files/results.json", "/files/manifest.json", "/files/samples/index.json",
    "/files/samples/labelling/index.json", "/files/decoders/validity.json",
    "/files/samples/.hidden.png", "/files/samples/labelling/../../results.json",
    "/files/samples/labelling/%2e%2e/%2e%2e/review.jsonl", "/files/samples/%00.png",
    "/static/..%2fserve%2fserve.css", "/static/%2e%2e%2f%2e%2e%2fresults.json",
    "/static/report.css%00", "/files/samples/generated-tone-dark.png/..",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_known_image_folders_is_sent(client, run, outside, path):
    c, _, _ = client
    r = c.get(path)
    assert r.status_code in (403, 404), (path, r.status_code)
    assert SECRET not in r.text and '"schema_version"' not in r.text
    assert r.headers.get("content-type", "").startswith("text/")


@pytest.mark.parametrize("where", ["file", "folder", "labelling-file"])
def test_a_link_out_of_the_run_folder_is_refused(client, run, outside, where):
    c, _, _ = client
    if where == "file":
        (run / "samples" / "generated-tone-dark.png").unlink()
        (run / "samples" / "generated-tone-dark.png").symlink_to(outside)
        path = "/files/samples/generated-tone-dark.png"
    elif where == "folder":
        real = run.parent / "elsewhere"
        (run / "samples").rename(real)
        (run / "samples").symlink_to(real)
        path = "/files/samples/real-lowest.png"
    else:
        (run / SAMPLE_DIR / "0000.png").unlink()
        (run / SAMPLE_DIR / "0000.png").symlink_to(outside)
        path = f"/files/{SAMPLE_DIR}/0000.png"
    r = c.get(path)
    assert r.status_code == 404 and SECRET not in r.text


def test_an_image_the_run_did_not_write_is_not_sent(client, run):
    c, _, _ = client
    (run / "samples" / "generated-stroke-thin.png").write_bytes(b"\x89PNG planted")
    (run / "samples" / "real-lowest.png").write_bytes(b"\x89PNG changed")
    (run / SAMPLE_DIR / "9999.png").write_bytes(b"\x89PNG not in the sample")
    for rel in ("samples/generated-stroke-thin.png", "samples/real-lowest.png",
                f"{SAMPLE_DIR}/9999.png"):
        assert c.get(f"/files/{rel}").status_code == 404
    assert c.get("/files/samples/real-highest.png").status_code == 200


# ---------------------------------------------------------------- labelling


def _answer(c: TestClient, csrf: str, html: str, key: str) -> object:
    """Press the answer button of ``key`` on the labelling page ``html``."""
    image = re.search(r'name="image_id" value="([^"]+)"', html).group(1)
    concept = re.search(r'name="concept" value="([^"]+)"', html).group(1)
    group = re.search(rf'name="group" value="([^"]+)" data-key="{key}"', html).group(1)
    return c.post("/label", data={"csrf": csrf, "image_id": image, "concept": concept,
                                  "group": group})


def test_labelling_asks_each_concept_of_each_image_saves_at_once_and_resumes(run):
    c, guard = _client(run)
    csrf = _login(c, guard)
    assert c.post("/label/name", data={"csrf": csrf, "labeller": "L. Abeller"}).status_code == 303
    html = c.get("/label").text
    assert "0 of 48 answers" in html and "<kbd>1</kbd> light" in html
    assert "<kbd>0</kbd> can&#39;t tell" in html
    assert re.search(r'<img id="label-image" src="/files/samples/labelling/0000.png" alt="[^"]+',
                     html)
    for key in ["1", "2", "0"]:
        assert _answer(c, csrf, html, key).status_code == 303
        html = c.get("/label").text
    labels = read_labels(run)
    assert list(labels["group"]) == ["light", "thick", CANT_TELL]  # saved at once, each
    assert list(labels["concept"]) == ["tone", "stroke", "tone"]
    assert set(labels["labeller"]) == {"L. Abeller"} and set(labels["source"]) == {"web"}
    assert "3 of 48 answers" in html and "1 of 24 images complete" in html
    # the browser closes; another session with the same name resumes at the 4th answer
    c2, _ = _client(run, guard)
    csrf2 = _login(c2, guard)
    c2.post("/label/name", data={"csrf": csrf2, "labeller": "L. Abeller"})
    html2 = c2.get("/label").text
    assert "3 of 48 answers" in html2 and 'name="concept" value="stroke"' in html2
    assert "Image 2 of 24" in html2


def test_a_forged_answer_is_refused_and_nothing_is_saved(client, run):
    c, csrf, _ = client
    c.post("/label/name", data={"csrf": csrf, "labeller": "L"})
    for image, concept, group in [("gen-not-in-sample", "tone", "light"),
                                  ("gen-0-0", "digit", "3"), ("gen-0-0", "tone", "purple")]:
        item = re.search(r'name="image_id" value="([^"]+)"', c.get("/label").text).group(1)
        r = c.post("/label", data={"csrf": csrf, "image_id": item if image == "gen-0-0" else image,
                                   "concept": concept, "group": group})
        assert r.status_code == 400 and "nothing was saved" in r.text
    assert not (run / LABELS_FILE).exists()


def test_two_tabs_labelling_at_once_both_land(run):
    tabs = []
    for name in ("A", "B", "C", "D"):
        c, guard = _client(run)
        csrf = _login(c, guard)
        c.post("/label/name", data={"csrf": csrf, "labeller": name})
        tabs.append((c, csrf, c.get("/label").text))
    start = threading.Barrier(len(tabs))
    codes = []

    def answer(k: int) -> None:
        c, csrf, html = tabs[k]
        start.wait()
        codes.append(_answer(c, csrf, html, "1").status_code)

    threads = [threading.Thread(target=answer, args=(k,)) for k in range(len(tabs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [303] * len(tabs)
    assert sorted(read_labels(run)["labeller"]) == ["A", "B", "C", "D"]


def test_the_pages_keys_are_the_labels_modules_vocabulary():
    assert labelling._CANT_TELL == CANT_TELL
    assert [c.key for c in labelling.keys_for(["a", "b", "c"])] == ["1", "2", "3", "0"]


def test_without_a_labelling_sample_the_page_says_how_to_make_one(tmp_path):
    run = make_run(tmp_path)
    c, guard = _client(run)
    csrf = _login(c, guard)
    c.post("/label/name", data={"csrf": csrf, "labeller": "L"})
    r = c.get("/label")
    assert r.status_code == 409 and "samples stage writes it" in r.text
    assert "samples stage writes it" in c.get("/").text


# ---------------------------------------------------------------- the command


def test_serve_prints_the_address_with_its_token_and_warns_off_loopback(run, monkeypatch):
    import audit.serve.server as server

    started = []

    class _NoServer:
        def run(self, sockets):
            started.append(sockets[0].getsockname())
            sockets[0].close()

    monkeypatch.setattr(server, "_server", lambda run_dir, served: _NoServer())
    result = CliRunner().invoke(cli, ["serve", str(run), "--port", "0", "--no-browser"])
    assert result.exit_code == 0, result.output
    url = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", result.output)
    assert url and int(url.group(1)) == started[0][1] and len(url.group(2)) >= 40
    assert "warning" not in result.output
    result = CliRunner().invoke(cli, ["serve", str(run), "--port", "0", "--no-browser",
                                      "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0" in result.output and "token" in result.output
    assert started[1][0] == "0.0.0.0"


def test_serve_without_the_extra_says_what_to_install(run, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn raises ImportError
    result = CliRunner().invoke(cli, ["serve", str(run), "--no-browser"])
    assert result.exit_code == 2
    assert "pip install 'gan-audit[serve]'" in result.output and "uvicorn" in result.output
    assert "Traceback" not in result.output


def test_serve_on_a_folder_without_results_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(cli, ["serve", str(tmp_path), "--no-browser", "--port", "0"])
    assert result.exit_code == 2 and "results.json" in result.output


def test_a_port_in_use_is_a_clear_error(run):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", str(run), "--no-browser", "--port", str(port)])
    assert result.exit_code == 2 and "another --port" in result.output
