"""Latency of the demo as a user sees it: Generate -> first streamed update -> final image.

Launches the app in-process on 127.0.0.1 with the same model ``python app.py`` would load (the
shipped checkpoint, else the untrained ``dir7-demo``) and drives it through ``gradio_client``
at the page's default settings, so the figures include queueing, figure building and
streaming, not only sampling. Or point it at a running app with ``--url``.

    python -m benchmarks.app_latency                 # 2 runs at default settings
    python -m benchmarks.app_latency --runs 3 --steps 10
    python -m benchmarks.app_latency --url http://127.0.0.1:7860/
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


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
    return {"first_update_s": first_any, "first_step_s": first_step, "final_image_s": final, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="measure a running app instead of launching one")
    parser.add_argument("--checkpoint", default=None, help="as app.py --checkpoint")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="default: the page's default")
    parser.add_argument("--prompt", default="a red circle left of a blue square")
    parser.add_argument("--seed", type=int, default=0)
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
            r = measure(client, args, defaults)
            results.append(r)
            print(
                f"run {run + 1}: first update {r['first_update_s']:.2f} s · first step (x0 preview) "
                f"{r['first_step_s']:.2f} s · final image {r['final_image_s']:.2f} s ({r['steps']} steps)"
            )
        if demo is not None:
            # The same sampling without the app around it, to show what the UI adds.
            steps = args.steps or defaults["num_inference_steps"]
            start = time.perf_counter()
            for _ in service.pipe.steps(
                args.prompt, None, steps, defaults["guidance_scale"], args.seed, defaults["sampler"]
            ):
                pass
            print(f"pipeline alone (no app): {time.perf_counter() - start:.2f} s ({steps} steps)")
    finally:
        if demo is not None:
            demo.close()
    if len(results) > 1:
        for key in ("first_update_s", "first_step_s", "final_image_s"):
            values = [r[key] for r in results]
            print(f"median {key}: {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})")
    print(f"load avg after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
