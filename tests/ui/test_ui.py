#!/usr/bin/env python3
"""The web UI in a real browser (issue 12): Debian's Chromium driven by Playwright.

Starts `crashbox serve` on a temp data dir and a free 127.0.0.1 port, loads the fixture
and corpus dSYMs and crash reports through the HTTP API (plus one report with markup
planted in every free-text field), then signs in and uses the pages the way an engineer
would: filters, sorts, opens groups, checks symbolicated frames against
llvm-symbolizer's (fixtures/out/reports/expected_frames.json), resolves and reopens,
downloads a .crash, checks CSRF, scopes and that an anonymous visitor sees nothing.
Screenshots of every page, laptop and phone, go to a folder it prints.

    bash scripts/browser.sh      # chromium + playwright into target/ui-venv
    target/ui-venv/bin/python tests/ui/test_ui.py [--bin target/release/crashbox]

Exits non-zero on the first failed check.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile

from playwright.sync_api import expect, sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "..", "shared", "corpus")
FIXTURES = os.path.join(ROOT, "fixtures", "out")
CHROMIUM = os.environ.get("CRASHBOX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FIXTURE_RELEASE = "com.crashbox.fixture 1.0 (1)"
# Markup that would run script, or leave an element behind, if a page put it in the
# HTML unescaped. The CSP alone would stop the script, so the test looks for the
# element and for the literal text: both fail if escaping is removed.
PROBE = '<b class="xss-probe">probe</b><img src=x onerror="document.body.dataset.xss=1">'
# The same without spaces, for fields a release name or an image name is made of.
PROBE_WORD = "<i/class=xss-probe>probe</i>"
PROBE_RELEASE = f"com.crashbox.probe{PROBE_WORD} 2.0{PROBE_WORD} (7{PROBE_WORD})"

CHECKS = 0


def check(ok, what):
    global CHECKS
    CHECKS += 1
    if not ok:
        raise AssertionError(what)
    print(f"ok   {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, exe, root):
        self.exe, self.root = exe, root
        self.data = os.path.join(root, "data")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(os.path.join(root, "server.log"), "w")
        self.proc = subprocess.Popen(
            [exe, "serve", "--data-dir", self.data, "--dsyms-dir", os.path.join(root, "dsyms"),
             "--listen", self.url.removeprefix("http://")],
            stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(200):
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=1)
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("crashbox serve did not answer /healthz")

    def token(self, scope, name=None):
        cmd = [self.exe, "token", "create", "--data-dir", self.data, "--scope", scope]
        if name:
            cmd += ["--name", name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return out.stdout.split()[-1]

    def call(self, method, path, body=None, token=None, ctype="application/octet-stream"):
        headers = {"Content-Type": ctype}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                return r.status, json.loads(raw) if raw.startswith(b"{") else raw
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def zip_dir(src, dest):
    with zipfile.ZipFile(dest, "w") as z:
        for base, _, files in os.walk(src):
            for f in files:
                p = os.path.join(base, f)
                z.write(p, os.path.relpath(p, os.path.dirname(src)))
    return dest


def probe_report(incident):
    """A crashbox JSON report with PROBE in every free-text field a page shows."""
    return json.dumps({
        "crashbox": 1,
        "incident_id": incident,
        "app": {"bundle_id": "com.crashbox.probe" + PROBE_WORD, "name": "Probe",
                "version": "2.0" + PROBE_WORD, "build": "7" + PROBE_WORD},
        "os": {"name": "iOS" + PROBE_WORD, "version": "17.1" + PROBE_WORD},
        "device_model": "iPhone15,2" + PROBE,
        "arch": "arm64",
        "exception": {"type": "EXC_CRASH" + PROBE, "signal": "SIGABRT", "subtype": "subtype " + PROBE,
                      "name": "NSInternalInconsistencyException" + PROBE, "reason": "reason " + PROBE},
        "crashed_thread": 0,
        "threads": [
            {"index": 0, "crashed": True, "name": "thread " + PROBE, "queue": "queue " + PROBE,
             "frames": [{"address": "0x1a0001000", "symbol": "probe_function" + PROBE, "image": "Probe" + PROBE_WORD},
                        {"address": "0x1a0002000", "image": "Probe" + PROBE_WORD}]},
            {"index": 1, "name": "worker " + PROBE,
             "frames": [{"address": "0x1a0003000", "symbol": "worker" + PROBE, "image": "Probe" + PROBE_WORD}]},
        ],
        "images": [{"name": "Probe" + PROBE_WORD, "path": "/var/containers/Bundle/Application/Probe.app/Probe" + PROBE,
                    "uuid": "11111111-2222-3333-4444-555555555555", "load_address": "0x1a0000000",
                    "size": 65536, "arch": "arm64"}],
    }).encode()


def load(srv, admin):
    status, _ = srv.call("POST", "/api/v1/dsyms?release=" + urllib.parse.quote(FIXTURE_RELEASE),
                         open(os.path.join(FIXTURES, "dSYMs.zip"), "rb").read(), admin)
    check(status == 201, f"fixture dSYMs upload answers 201 ({status})")
    z = zip_dir(os.path.join(CORPUS, "xcode-dsyms"), os.path.join(srv.root, "xcode-dsyms.zip"))
    status, _ = srv.call("POST", "/api/v1/dsyms", open(z, "rb").read(), admin)
    check(status == 201, f"corpus dSYMs upload answers 201 ({status})")
    reports = [os.path.join(FIXTURES, "reports", n) for n in ("fixture_v1.ips", "fixture_v2.ips")]
    for sub in ("apple-ips", "apple-crash", "sentry-events", "metrickit"):
        d = os.path.join(CORPUS, sub)
        reports += [os.path.join(d, n) for n in sorted(os.listdir(d)) if not n.startswith(".")]
    ids = {}
    for path in reports:
        status, body = srv.call("POST", "/api/v1/crashes", open(path, "rb").read(), admin)
        if status in (200, 201):
            ids[os.path.basename(path)] = body
    check(len(ids) >= 10, f"corpus crash reports stored ({len(ids)} of {len(reports)})")
    body = json.dumps({"release": FIXTURE_RELEASE, "channel": "production", "rollout": 25}).encode()
    status, _ = srv.call("POST", "/api/v1/releases", body, admin, "application/json")
    check(status in (200, 201), f"release metadata set ({status})")
    body = json.dumps({"total": 400, "crashed": 3}).encode()
    status, _ = srv.call("POST", "/api/v1/releases/" + urllib.parse.quote(FIXTURE_RELEASE) + "/sessions",
                         body, admin, "application/json")
    check(status in (200, 201), f"sessions counted ({status})")
    return ids


def no_probe_element(page, where):
    check(page.locator(".xss-probe").count() == 0, f"{where}: no element from report markup")
    check(page.locator("img[src='x']").count() == 0, f"{where}: no <img> from report markup")
    check(page.evaluate("document.body.dataset.xss") is None, f"{where}: no script from report markup")


def submit(page, selector):
    """Clicks a button that submits a form and waits for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def sign_in(page, token):
    page.fill("#token", token)
    submit(page, "button[type=submit]")


def shoot(page, shots, name):
    path = os.path.join(shots, f"{name}.png")
    page.screenshot(path=path, full_page=True)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "crashbox"))
    ap.add_argument("--shots", default=os.path.join(ROOT, "target", "ui-screenshots"))
    a = ap.parse_args()
    shutil.rmtree(a.shots, ignore_errors=True)
    os.makedirs(a.shots)
    root = tempfile.mkdtemp(prefix="crashbox-ui-")
    srv = Server(a.bin, root)
    try:
        run(srv, a.shots)
    except Exception:
        print(f"server log: {os.path.join(root, 'server.log')}", file=sys.stderr)
        raise
    finally:
        srv.stop()
    shutil.rmtree(root, ignore_errors=True)
    print(f"{CHECKS} checks passed; screenshots in {a.shots}")


def run(srv, shots):
    admin = srv.token("admin")
    triage = srv.token("triage", "alice")
    read = srv.token("read", "rita")
    upload = srv.token("upload")
    ids = load(srv, admin)
    abort = ids["crashprobe_call_abort.json"]
    fixture = ids["fixture_v1.ips"]
    expected = json.load(open(os.path.join(FIXTURES, "reports", "expected_frames.json")))["fixture_v1.ips"]

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        laptop = browser.new_context(viewport={"width": 1280, "height": 800})
        page = laptop.new_page()
        # Merges ask with confirm() (accepted here); any alert() would be report markup
        # running, which the probe checks below must never see.
        dialogs = []
        page.on("dialog", lambda d: (d.type != "confirm" and dialogs.append(d.message), d.accept()))
        console_errors = []
        page.on("console", lambda m: m.type == "error" and console_errors.append(m.text))

        # Anonymous: every page that shows data leads to the sign-in form.
        for path in ("/", f"/groups/{abort['group_id']}", "/releases",
                     "/releases/" + urllib.parse.quote(FIXTURE_RELEASE), "/debug-files",
                     f"/crashes/{abort['id']}/apple"):
            page.goto(srv.url + path)
            check(urllib.parse.urlparse(page.url).path == "/login", f"anonymous {path} goes to /login")
            check("CRLCrash" not in page.content(), f"anonymous {path} shows no crash data")
        page.goto(srv.url + "/login")
        shoot(page, shots, "login-laptop")

        # Tokens for machines cannot sign in; a wrong token is refused.
        for bad, why in ((upload, "upload"), ("cbx_not_a_token", "unknown")):
            sign_in(page, bad)
            check(page.locator(".error").count() == 1, f"an {why} token is refused with a message")

        # A read session: sees groups, actions disabled.
        sign_in(page, read)
        check(urllib.parse.urlparse(page.url).path == "/", f"signing in lands on the groups page ({page.url})")
        cookies = laptop.cookies()
        check(len(cookies) == 1 and cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict",
              f"one session cookie, HttpOnly and SameSite=Strict ({cookies})")
        page.goto(f"{srv.url}/groups/{abort['group_id']}")
        check(page.locator("#resolve").is_disabled(), "a read session sees Resolve disabled")
        # The JSON API takes bearer tokens only, never the cookie.
        r = page.request.get(srv.url + "/api/v1/groups")
        check(r.status == 401, f"the JSON API refuses the session cookie ({r.status})")
        # Even a forged form post with the right CSRF token is refused for read.
        csrf = page.locator("input[name=csrf]").first.get_attribute("value")
        r = page.request.post(f"{srv.url}/groups/{abort['group_id']}/state",
                              form={"csrf": csrf, "status": "resolved"}, max_redirects=0)
        check(r.status == 403, f"a read session cannot change a group ({r.status})")
        submit(page, "text=Sign out")
        check(urllib.parse.urlparse(page.url).path == "/login", "sign-out returns to /login")
        page.goto(srv.url + "/")
        check(urllib.parse.urlparse(page.url).path == "/login", "after sign-out / asks to sign in again")

        # A triage session, returning to the page it asked for.
        page.goto(f"{srv.url}/releases")
        sign_in(page, triage)
        check(urllib.parse.urlparse(page.url).path == "/releases", "sign-in returns to the page asked for")
        # The refused sign-ins above answered 401, which the console reports; from here
        # on, any console error (a CSP violation, a missing asset) fails the test.
        console_errors.clear()
        page.goto(srv.url + "/")
        body = page.inner_text("main")
        check("-[CRLCrashAbort crash]" in body, "the groups page names -[CRLCrashAbort crash]")
        check("cb_read_field" in body, "the groups page names the fixture's crash site")
        shoot(page, shots, "groups-laptop")

        # Filters and sort live in the URL.
        page.fill("#f-q", "CRLCrashNULL")
        page.press("#f-q", "Enter")
        page.wait_for_load_state()
        check("q=CRLCrashNULL" in page.url, f"search goes into the URL ({page.url})")
        titles = page.locator("td.title a").all_inner_texts()
        check(titles and all("CRLCrashNULL" in t for t in titles), f"search keeps matching groups ({titles})")
        page.goto(srv.url + "/")
        page.select_option("#f-status", "all")  # applies by itself (app.js)
        page.wait_for_url(re.compile(r"status=all"))
        check("status=all" in page.url, "the state filter applies on change")
        page.click("nav.sorts >> text=Crashes")
        page.wait_for_url(re.compile(r"sort=count"))
        check("status=all" in page.url, "sorting keeps the filters")
        page.goto(srv.url + "/?release=" + urllib.parse.quote(FIXTURE_RELEASE))
        titles = page.locator("td.title a").all_inner_texts()
        check(titles and all("CRLCrash" not in t for t in titles), f"the release filter narrows groups ({titles})")
        page.goto(srv.url + "/?sort=bogus")
        check(page.locator(".error").count() == 1, "a bad sort says what is wrong")

        # The fixture group: frames as llvm-symbolizer reads the same dSYM.
        page.goto(f"{srv.url}/groups/{fixture['group_id']}")
        crashed = page.locator(".thread.crashed").first
        text = crashed.inner_text()
        for frame in expected["threads"][0]["frames"]:
            if frame["image"] != "CrashboxFixture":
                continue
            for loc in frame["locations"]:
                fn = loc["function"]
                fn_short = fn.split("(")[0].split(" ")[-1] if "(" in fn else fn
                check(fn_short in text, f"fixture frame {fn_short} on the page")
                check(f"{loc['file']}:{loc['line']}" in text, f"fixture frame {loc['file']}:{loc['line']} on the page")
        check(crashed.locator("li.frame.inlined").count() >= 2, "inlined frames are marked as inlined")
        numbers = crashed.locator("li.frame .no").all_inner_texts()
        inlined = len(expected["threads"][0]["frames"][0]["locations"]) - 1
        check(numbers[:inlined + 2] == ["0"] * (inlined + 1) + ["1"],
              f"inlined frames share their frame's number ({numbers[:inlined + 2]})")
        check(crashed.locator("li.frame.app").count() >= 3, "in-app frames stand out")
        shoot(page, shots, "group-fixture-laptop")

        # The CRLCrashAbort group: resolve, see the state change, reopen.
        page.goto(f"{srv.url}/groups/{abort['group_id']}")
        check("-[CRLCrashAbort crash]" in page.locator(".thread.crashed").first.inner_text(),
              "the group page shows the symbolicated crash site")
        check(page.locator("details.sysrun").count() >= 1, "runs of system frames fold")
        shoot(page, shots, "group-laptop")
        page.select_option("#resolved-in", "next")
        submit(page, "#resolve")
        expect(page.locator("#group-state")).to_have_text("resolved")
        check("alice" in page.inner_text("ol.activity"), "the activity log names who resolved it")
        status, g = srv.call("GET", f"/api/v1/groups/{abort['group_id']}", token=admin)
        check(g.get("status") == "resolved" and g.get("resolved_in") == "next", f"the API agrees ({g.get('status')})")
        page.goto(srv.url + "/")
        check("-[CRLCrashAbort crash]" not in page.inner_text("main"), "a resolved group leaves the open list")
        page.goto(f"{srv.url}/groups/{abort['group_id']}")
        submit(page, "#reopen")
        expect(page.locator("#group-state")).to_have_text("unresolved")

        # Merge the CRLCrashNULL group into this one, then take its signature back out.
        null = ids["crashprobe_dereference_a_null_pointer.json"]
        page.fill("#merge-ids", f"{srv.url}/groups/{null['group_id']}")
        submit(page, "form[action$='/merge'] button")
        signatures = page.locator("ul.signatures li").all_inner_texts()
        check(len(signatures) == 2 and any("CRLCrashNULL" in x for x in signatures),
              f"a merge lists the merged signature ({signatures})")
        check("merge" in page.inner_text("ol.activity"), "the activity log records the merge")
        page.goto(f"{srv.url}/groups/{null['group_id']}")
        check(urllib.parse.urlparse(page.url).path == f"/groups/{abort['group_id']}",
              "a merged-away group's page leads to the group it joined")
        submit(page, "ul.signatures form button")
        check(page.locator("ul.signatures li").count() == 1, "unmerge takes the signature back out")
        _, g = srv.call("GET", f"/api/v1/groups/{null['group_id']}", token=admin)
        check(g.get("id") == null["group_id"], "the unmerged signature has its own group again")

        # A stale or forged form is refused and changes nothing.
        r = page.request.post(f"{srv.url}/groups/{abort['group_id']}/state",
                              form={"csrf": "0" * 32, "status": "resolved"}, max_redirects=0)
        check(r.status == 403, f"a form without the session's CSRF token is refused ({r.status})")
        _, g = srv.call("GET", f"/api/v1/groups/{abort['group_id']}", token=admin)
        check(g.get("status") == "unresolved", "and the group did not change")

        # Download the sample crash as an Apple .crash.
        with page.expect_download() as dl:
            page.click("text=Download .crash")
        path = dl.value.path()
        check("CRLCrashAbort" in open(path, errors="replace").read(), "the downloaded .crash is symbolicated")

        # The markup probe (sent twice: a group of two crashes), loaded only now so the
        # screenshots above show the corpus alone: every page shows it as text, none
        # runs it.
        for i in range(2):
            status, probe = srv.call("POST", "/api/v1/crashes", probe_report(f"probe-{i}"), admin)
            check(status == 201, f"the markup probe report is stored ({status}: {probe!r:.200})")
        page.goto(srv.url + "/?status=all&q=probe")
        no_probe_element(page, "groups page")
        check("xss-probe" in page.inner_text("main"), "the groups page shows the probe as text")
        page.goto(f"{srv.url}/groups/{probe['group_id']}")
        page.locator("details.other-thread summary").first.click()
        no_probe_element(page, "group page")
        text = page.inner_text("main")
        for field in ("reason " + PROBE, "subtype " + PROBE, "thread " + PROBE, "queue " + PROBE,
                      "worker" + PROBE, "probe_function" + PROBE, "iPhone15,2" + PROBE, "iOS" + PROBE_WORD,
                      "Probe" + PROBE_WORD, "2.0" + PROBE_WORD):
            check(field in text, f"group page shows {field[:24]}… as text")
        newest = page.locator(".meta .muted").inner_text()
        check(page.locator("a[rel=next]", has_text="Older").count() == 1, "a group of two crashes steps to the older one")
        submit(page, "text=Older →")
        check("crash=" in page.url, "stepping names the crash in the URL")
        check(page.locator(".meta .muted").inner_text() != newest, "the older crash is another crash")
        check(page.locator("a[rel=prev]", has_text="Newer").count() == 1, "and steps back to the newer one")
        check(page.locator("a[rel=next]", has_text="Older").count() == 0, "and is the oldest")
        no_probe_element(page, "older crash")
        for path in ("/releases", "/releases/" + urllib.parse.quote(PROBE_RELEASE, safe=""), "/debug-files"):
            page.goto(srv.url + path)
            check("xss-probe" in page.inner_text("main"), f"{path[:40]} shows the probe as text")
            no_probe_element(page, path[:40])

        # Releases and debug files.
        page.goto(srv.url + "/releases")
        text = page.inner_text("main")
        check("com.crashbox.fixture" in text and "production" in text and "99.25 %" in text,
              "the releases page shows channel and crash-free sessions")
        shoot(page, shots, "releases-laptop")
        page.click(f"a[href='/releases/{urllib.parse.quote(FIXTURE_RELEASE, safe='')}']")
        text = page.inner_text("main")
        check("Top groups" in text and "cb_read_field" in text, "a release page lists its top groups")
        shoot(page, shots, "release-laptop")
        page.goto(srv.url + "/releases/" + urllib.parse.quote(PROBE_RELEASE, safe=""))
        text = page.inner_text("main")
        check("crashbox upload-dsyms" in text and "11111111-2222-3333-4444-555555555555" in text,
              "a release with missing dSYMs shows them and the upload command")
        check(f"--release '{PROBE_RELEASE}' path/to/App.xcarchive" in text,
              "the command shell-quotes the release a report named")
        page.goto(srv.url + "/debug-files")
        text = page.inner_text("main")
        check("CrashboxFixture" in text and "CrashLibiOS" in text, "the debug files page lists uploads")
        check("11111111-2222-3333-4444-555555555555" in text, "and the missing dSYMs")
        shoot(page, shots, "debug-files-laptop")
        check(not console_errors, f"no console errors (CSP violations included): {console_errors}")

        # The same pages on a phone.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                    is_mobile=True, has_touch=True)
        phone.add_cookies(laptop.cookies())
        mp = phone.new_page()
        for name, path in (("groups", "/"), ("group", f"/groups/{abort['group_id']}"),
                           ("releases", "/releases"), ("debug-files", "/debug-files")):
            mp.goto(srv.url + path)
            width = mp.evaluate("document.documentElement.scrollWidth")
            check(width <= 400, f"{name} fits a phone's width ({width}px)")
            shoot(mp, shots, f"{name}-phone")
        check(not dialogs, f"no dialog opened: {dialogs}")
        browser.close()


if __name__ == "__main__":
    main()
