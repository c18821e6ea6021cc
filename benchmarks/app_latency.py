"""Latency of the demo as a user sees it: Generate -> first streamed update -> final image.

Launches the app in-process on 127.0.0.1 with the same model ``python app.py`` would load (the
shipped checkpoint, else the untrained ``dir7-demo``) and drives it through ``gradio_client``
at the page's default settings, from a separate process (as a browser is), so the figures
include queueing, figure building and streaming, not only sampling. Each run is followed by the
pipeline's own sampling of the same request in the app's process (state statistics included,
as the page shows them), so the app's overhead is measured against what sampling takes then. Or point it at a running
app with ``--url`` (then only the app's side is timed).

    python -m benchmarks.app_latency                 # 2 runs at default settings
    python -m benchmarks.app_latency --runs 3 --json results/benchmarks/app_latency.json
    python -m benchmarks.app_latency --url http://127.0.0.1:7860/
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def measure_in_a_client_process(url: str, args, defaults) -> dict[str, float]:
    """``measure`` from another process, as a browser would be: the client's work (receiving and
    parsing the stream) then does not compete with the app for the Python interpreter's lock."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_measure_from_url, (url, args, defaults))


def _measure_from_url(url: str, args, defaults) -> dict[str, float]:
    from gradio_client import Client

    return measure(Client(url, verbose=False, download_files=False), args, defaults)


def measure(client, args, defaults) -> dict[str, float]:
    steps = args.steps or defaults["num_inference_steps"]
    start = time.perf_counter()
    job = client.submit(
        args.prompt, "", steps, defaults["guidance_scale"], defaults["sampler"], args.seed, False,
        api_name="/generate",
    )  # fmt: skip
    first_any = first_step = None
    last = None
    for output in job:  # blocks until each streamed update arrives
        now = time.perf_counter() - start
        first_any = first_any if first_any is not None else now
        if first_step is None and output[0] is not None:  # an x0 preview: a denoising step is done
            first_step = now
        last = output
    final = time.perf_counter() - start
    if last is None or "Done" not in str(last[1]):
        raise RuntimeError(f"generation did not finish: {last!r}")
    # the status says how long sampling took inside the app ("Done — 25 steps in 7.1 s")
    inside = float(re.search(r"steps in ([0-9.]+) s", str(last[1])).group(1))
    return {"first_update_s": first_any, "first_step_s": first_step, "final_image_s": final,
            "sampling_in_app_s": inside, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="measure a running app instead of launching one")
    parser.add_argument("--checkpoint", default=None, help="as app.py --checkpoint")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the page's default")
    parser.add_argument("--prompt", default="a red circle left of a blue square")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args()

    from gradio_client import Client

    demo = None
    if args.url:
        url = args.url
        defaults = None  # read from the page's API description below
        info = f"running app at {url}"
    else:
        from app.service import DemoService
        from app.ui import build_demo, launch_options

        t0 = time.perf_counter()
        service = DemoService.load(checkpoint=args.checkpoint)
        load_s = time.perf_counter() - t0
        defaults = service.defaults
        demo = build_demo(service)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
        url = f"http://127.0.0.1:{port}/"
        model = service.info.get("name")
        info = (
            f"model {model!r} ({'trained' if service.trained else 'UNTRAINED, random init'}), device {service.device}"
        )
        print(f"model load: {load_s:.1f} s")

    import torch

    print(f"{info}; torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load avg {os.getloadavg()}")
    client = Client(url, verbose=False, download_files=False)
    if defaults is None:
        params = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/generate"]["parameters"]
        by_name = {p["parameter_name"]: p.get("parameter_default") for p in params}
        defaults = {k: by_name[k] for k in ("num_inference_steps", "guidance_scale", "sampler")}
    print(f"settings: {defaults} (steps override: {args.steps})")
    results = []
    try:
        for run in range(args.runs):
            r = measure_in_a_client_process(url, args, defaults)
            if demo is not None:
                # the same sampling without the app around it (state statistics included, as the
                # page computes them), right after, in the same process: what the app adds
                steps = args.steps or defaults["num_inference_steps"]
                start = time.perf_counter()
                for _ in service.pipe.steps(
                    args.prompt, None, steps, defaults["guidance_scale"], args.seed, defaults["sampler"]
                ):
                    pass
                r["pipeline_alone_s"] = time.perf_counter() - start
            results.append(r)
            print(
                f"run {run + 1}: first update {r['first_update_s']:.2f} s · first step (x0 preview) "
                f"{r['first_step_s']:.2f} s · final image {r['final_image_s']:.2f} s ({r['steps']} steps)"
                + (f" · pipeline alone {r['pipeline_alone_s']:.2f} s" if "pipeline_alone_s" in r else "")
            )
    finally:
        if demo is not None:
            demo.close()
    summary = {key: statistics.median(r[key] for r in results) for key in results[0]}
    for key, value in summary.items():
        print(f"median {key}: {value:.2f}")
    if "pipeline_alone_s" in summary:
        summary["app_overhead"] = summary["final_image_s"] / summary["pipeline_alone_s"] - 1
        print(f"the app adds {summary['app_overhead']:+.1%} to the pipeline's own time")
    print(f"load avg after: {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "settings": defaults, "runs": results, "median": summary},
                                        indent=1))


if __name__ == "__main__":
    main()
