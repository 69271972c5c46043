#!/usr/bin/env python3
"""The README's picture of the page (web/screenshot.png), taken after its run completes:
headless Chromium driven by ChromeDriver (Debian's chromium-driver) over WebDriver's HTTP
API, standard library only. `chromium --screenshot` cannot do it: it shoots before the GPU
work of the page is done. Not part of CI (the page's test is web/browser_test.py).

    web/build.sh && python3 web/screenshot.py [--out web/screenshot.png] [--query rows=256&cols=32000]
"""

import argparse
import base64
import http.server
import json
import subprocess
import threading
import time
import urllib.request

from browser_test import CHROMIUM_FLAGS, Server


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())["value"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="web/screenshot.png")
    parser.add_argument("--query", default="rows=256&cols=32000")
    parser.add_argument("--size", default="900,1700")
    args = parser.parse_args()
    server = Server()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = 9515
    driver = subprocess.Popen(["chromedriver", f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(50):
            try:
                call(base, "GET", "/status")
                break
            except OSError:
                time.sleep(0.2)
        flags = [f for f in CHROMIUM_FLAGS if f != "--enable-logging=stderr"]
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium", "args": flags + [f"--window-size={args.size}"]}}}}
        session = call(base, "POST", "/session", caps)["sessionId"]
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?{args.query}"
        call(base, "POST", f"/session/{session}/url", {"url": url})
        script = {"script": "return document.getElementById('result').textContent", "args": []}
        for _ in range(600):
            result = call(base, "POST", f"/session/{session}/execute/sync", script)
            if result:
                break
            time.sleep(0.5)
        print(result)
        png = call(base, "GET", f"/session/{session}/screenshot")
        with open(args.out, "wb") as f:
            f.write(base64.b64decode(png))
        call(base, "DELETE", f"/session/{session}")
        print(f"screenshot: {args.out}")
    finally:
        driver.kill()
        driver.wait()
        server.shutdown()


if __name__ == "__main__":
    main()
