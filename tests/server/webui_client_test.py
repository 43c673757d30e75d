#!/usr/bin/env python3
"""An unmodified webui API client against `otter serve`: written from the webui's API docs
(/docs of AUTOMATIC1111's stable-diffusion-webui), standard library only (urllib), as scripts in
the wild are. Starts the server on a free loopback port, uses the documented fields, then stops
it with SIGTERM and checks it exits 0 within the bound.

usage: webui_client_test.py OTTER_BINARY
"""
import base64
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request


def call(base, path, payload=None, method=None):
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data else "GET"),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, json.loads(r.read().decode())


def main():
    otter = sys.argv[1]
    server = subprocess.Popen([otter, "serve", "--port", "0", "--precision", "f32", "-q"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip().rstrip("/")
        assert base.startswith("http://127.0.0.1:"), f"no URL printed: {base!r} {server.stderr.read()}"

        status, models = call(base, "/sdapi/v1/sd-models")
        assert status == 200 and models[0]["model_name"] == "otter-shapes", models
        status, samplers = call(base, "/sdapi/v1/samplers")
        names = [s["name"] for s in samplers]
        assert "Euler a" in names and "DPM++ 2M" in names, names
        status, options = call(base, "/sdapi/v1/options")
        assert options["sd_model_checkpoint"] == "otter-shapes", options

        payload = {
            "prompt": "a red circle on a blue background",
            "negative_prompt": "",
            "seed": 1,
            "steps": 10,
            "cfg_scale": 7,
            "width": 64,
            "height": 64,
            "sampler_name": "DPM++ 2M",
            "scheduler": "Karras",
            "batch_size": 1,
            "n_iter": 2,
        }
        status, result = call(base, "/sdapi/v1/txt2img", payload)
        assert status == 200
        assert len(result["images"]) == 2, len(result["images"])
        for image in result["images"]:
            png = base64.b64decode(image)
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            assert b"parameters" in png  # the infotext is in the file, as the webui writes it
        info = json.loads(result["info"])
        assert info["all_seeds"] == [1, 2], info["all_seeds"]  # n_iter: the next batch takes the next seed
        assert info["sampler_name"] == "DPM++ 2M Karras", info["sampler_name"]
        assert "Seed: 2" in info["infotexts"][1], info["infotexts"]

        status, progress = call(base, "/sdapi/v1/progress?skip_current_image=true")
        assert status == 200 and progress["state"]["job_count"] == 0, progress

        try:
            call(base, "/sdapi/v1/txt2img", {"prompt": "x", "steps": "many"})
            raise AssertionError("a string for steps was accepted")
        except urllib.error.HTTPError as e:
            assert e.code == 400
            body = json.loads(e.read().decode())
            assert body["field"] == "steps", body

        # A slow request in flight, then SIGTERM: the server stops within its bound and exits 0.
        slow = subprocess.Popen([sys.executable, "-c", (
            "import json,urllib.request;"
            f"urllib.request.urlopen(urllib.request.Request('{base}/sdapi/v1/txt2img', data=json.dumps("
            "{'prompt':'x','steps':40}).encode(), headers={'Content-Type':'application/json'}), timeout=60).read()")],
            stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        start = time.time()
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
        slow.wait(timeout=60)
        assert code == 0, f"exit status {code}: {server.stderr.read()}"
        print(f"webui client: all calls as documented; SIGTERM -> exit 0 in {time.time() - start:.2f} s")
        return 0
    finally:
        if server.poll() is None:
            server.kill()


if __name__ == "__main__":
    sys.exit(main())
