#!/usr/bin/env python3
"""The page in a real browser: serves web/dist/ on 127.0.0.1, opens it in headless Chromium
(WebGPU on its SwiftShader adapter), and asserts the JSON the page reports.

The page (index.html?report&tests) POSTs {"result": <the JSON of <pre id="result">>,
"tests": <the library's checks in the browser>} to /result on this server when it is done.
Asserted: no error; the adapter is named; the seed's p to 3 decimals, L to 4, dL/dz to 3;
batch.ok (the 1024 x 32000 batch matches the f64 reference); positive timings; the
reductions guide's steps (check_guide); and every check of the library passed, none failed.
A page that does not report within --timeout seconds fails with the browser's last output. Standard library only.

    web/build.sh && python3 web/browser_test.py [--chromium /usr/bin/chromium] [--timeout 900]
"""

import argparse
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DIST = os.path.join(HERE, "dist")

# Headless Chromium with WebGPU on SwiftShader (no GPU here): Vulkan through ANGLE's
# SwiftShader. The networking flags keep Chromium from calling out of a closed network;
# --no-sandbox because CI runs as root.
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--enable-features=Vulkan",
    "--use-angle=swiftshader",
    "--use-webgpu-adapter=swiftshader",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--enable-logging=stderr",
]


class Server(http.server.ThreadingHTTPServer):
    """Serves web/dist/ and keeps the first body POSTed to /result."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.report = None
        self.reported = threading.Event()


class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=DIST, **kwargs)

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript"}

    def do_POST(self):
        if self.path != "/result":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()
        if not self.server.reported.is_set():
            self.server.report = json.loads(body)
            self.server.reported.set()

    def log_message(self, *args):
        pass


def close(actual, expected, digits):
    return len(actual) == len(expected) and all(
        round(a, digits) == e for a, e in zip(actual, expected))


# The reductions guide (docs/reductions.md) on the page: every step at every shape of
# web/src/guide.rs.
GUIDE_STEPS = ["1", "2", "3", "3v", "4", "5", "6"]
GUIDE_SHAPES = ["64x4000", "4x40000"]
# Steps that must have run right (at one shape at least): one thread per row, the workgroup
# tree, and the crate itself need nothing an adapter with WebGPU lacks.
GUIDE_MUST_RUN = ["1", "2", "3", "6"]


def allowed_refusal(entry, adapter):
    """Whether a step may be refused on this adapter: only where the adapter lacks what the
    step needs. Step 4 needs subgroups (SwiftShader's WebGPU offers wgpu no SUBGROUP feature);
    the loop-limit refusal is llvmpipe's alone (SwiftShader has no such limit). Any other
    refusal, e.g. of the vec4 steps at these shapes (all multiples of 4), fails."""
    why = entry.get("refusal") or ""
    if entry["step"] == "4" and why.startswith("no subgroups:"):
        return True
    return "loop turns" in why and "llvmpipe" in adapter.lower()


def check_guide(result, sections):
    """The problems with the guide's entries: each (step, shape) once; ok with its errors
    within 1e-5 and a positive time, or refused with an allowed reason; a step that ran and
    is wrong (ok false, or an error) fails; steps 1, 2, 3 and 6 ran ok; each step's section is
    a heading of the guide the page serves."""
    guide, adapter = result.get("guide"), result.get("adapter") or ""
    if not isinstance(guide, list):
        return [f"no guide in the result: {guide!r}"]
    problems, seen, ran = [], {}, set()
    for e in guide:
        key = (e.get("step"), e.get("shape"))
        seen[key] = seen.get(key, 0) + 1
        what = f"guide step {key[0]} at {key[1]}"
        if f"\n## {e.get('section')}:" not in sections:
            problems.append(f"{what}: its section {e.get('section')!r} is not in reductions.md")
        if e.get("ok") is True and not e.get("error"):
            errors = (e.get("grad_error"), e.get("loss_error"))
            if not all(isinstance(x, (int, float)) and 0 <= x <= 1e-5 for x in errors):
                problems.append(f"{what}: ok, but its errors {errors} are not within 1e-5")
            elif not (isinstance(e.get("ms"), (int, float)) and e["ms"] > 0):
                problems.append(f"{what}: no time ({e.get('ms')!r})")
            else:
                ran.add(key[0])
        elif e.get("ok") is None and "ok" in e:
            if not allowed_refusal(e, adapter):
                problems.append(f"{what}: refused where it should run: {e.get('refusal')!r}")
        else:
            # The page reports an infinite error (a NaN, e.g. an unwritten element) as null.
            errors = ["inf" if e.get(k) is None else e[k] for k in ("grad_error", "loss_error")]
            problems.append(f"{what}: ran and is WRONG: grad error {errors[0]}, loss error "
                            f"{errors[1]}, error {e.get('error')!r}")
    for step in GUIDE_STEPS:
        for shape in GUIDE_SHAPES:
            if seen.get((step, shape)) != 1:
                problems.append(f"guide step {step} at {shape}: {seen.get((step, shape), 0)} "
                                "entries, not 1")
    problems += [f"guide step {s} never ran ok" for s in GUIDE_MUST_RUN if s not in ran]
    return problems


def check(report):
    """The list of problems with the page's report (empty: it passed)."""
    result, tests = report.get("result") or {}, report.get("tests")
    problems = []
    if "error" in result:
        problems.append(f"the page reports an error: {result['error']}")
    if not result.get("adapter"):
        problems.append("no adapter named")
    seed = result.get("seed") or {}
    if not close(seed.get("p", []), [0.090, 0.245, 0.665], 3):
        problems.append(f"seed p {seed.get('p')} is not [0.090, 0.245, 0.665]")
    if round(seed.get("loss", 0.0), 4) != 1.4076:
        problems.append(f"seed L {seed.get('loss')} is not 1.4076")
    if not close(seed.get("grad", []), [0.090, -0.755, 0.665], 3):
        problems.append(f"seed dL/dz {seed.get('grad')} is not [0.090, -0.755, 0.665]")
    batch = result.get("batch") or {}
    if batch.get("ok") is not True:
        problems.append(f"batch not ok: {batch}")
    if (batch.get("rows"), batch.get("cols")) != (1024, 32000):
        problems.append(f"batch shape {batch.get('rows')} x {batch.get('cols')}, not 1024 x 32000")
    timing = result.get("timing") or {}
    if not (timing.get("kernel_ms", 0) > 0 and timing.get("copy_ms", 0) > 0):
        problems.append(f"timings missing: {timing}")
    with open(os.path.join(DIST, "reductions.md"), encoding="utf-8") as guide:
        problems += check_guide(result, guide.read())
    if tests is None:
        problems.append("the library's checks did not run")
    else:
        failed = [c for c in tests.get("checks", []) if not c.get("ok")]
        problems += [f"check failed: {c['name']}: {c['detail']}" for c in failed]
        if not tests.get("checks") or tests.get("failed") != len(failed):
            problems.append(f"the checks' report is inconsistent: {tests.get('passed')} passed, "
                            f"{tests.get('failed')} failed, {len(tests.get('checks', []))} listed")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    if not os.path.exists(os.path.join(DIST, "ml_softmax_web_bg.wasm")):
        sys.exit(f"browser_test: {DIST} has no page: run web/build.sh first")

    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/index.html?report&tests"
    profile = tempfile.mkdtemp(prefix="ml-softmax-chromium-")
    log = tempfile.TemporaryFile()
    start = time.monotonic()
    browser = subprocess.Popen([args.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", url],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        # Until the page reports, Chromium exits (a crash, a bad flag), or the time is up.
        while not server.reported.wait(1.0):
            why = None
            if browser.poll() is not None:
                why = f"Chromium exited with status {browser.returncode} before the page reported"
            elif time.monotonic() - start > args.timeout:
                why = f"the page did not report within {args.timeout:.0f} s"
            if why:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-4000:]
                sys.exit(f"browser_test: FAILED: {why} (Chromium's last output below)\n{tail}")
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
    seconds = time.monotonic() - start
    report = server.report
    print(json.dumps(report["result"]))
    for e in report["result"].get("guide") or []:
        outcome = (f"refused: {e.get('refusal')}" if e.get("ok") is None else
                   f"{'ok' if e.get('ok') else 'WRONG'} (grad {e.get('grad_error')}, "
                   f"loss {e.get('loss_error')}), {e.get('ms')} ms")
        print(f"guide step {e.get('step'):>2} {e.get('shape'):>8}: {outcome}")
    tests = report.get("tests") or {}
    print(f"library checks in the browser: {tests.get('passed')} passed, {tests.get('failed')} "
          f"failed, skipped: {tests.get('skipped')}")
    problems = check(report)
    server.shutdown()
    if problems:
        print("browser_test: FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        sys.exit(1)
    print(f"browser_test: passed in {seconds:.0f} s ({(report['result'].get('adapter'))})")


if __name__ == "__main__":
    main()
