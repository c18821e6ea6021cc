"""Launch the DIR-7 demo: ``python app.py`` (also the Hugging Face Spaces entry point).

Offers the shipped models (or those given with ``--checkpoint``) in a selector; loads the default
one now and the others when first selected (a clearly labelled untrained ``dir7-demo`` model
stands in when there is none), builds the page from ``app/`` and serves it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import dir7
from app.service import ModelRegistry
from app.ui import DEFAULT_CONCURRENCY, DEFAULT_MAX_QUEUE, build_demo, launch_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DIR-7 text-to-image demo with live CrossWKV state plots.")
    # On Spaces the platform sets GRADIO_SERVER_NAME/PORT; locally the defaults stay private.
    parser.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="interface to listen on (0.0.0.0 to serve the network; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860)"
    )
    parser.add_argument(
        "--share", action="store_true", help="also create a temporary public gradio.live link (needs internet access)"
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        metavar="DIR",
        help="a model directory to offer; repeat it for several (the first is the default). Default: "
        "$DIR7_CHECKPOINT alone, else every model shipped in checkpoints/ (dir7-shapes first), "
        "else an untrained dir7-demo model (clearly labelled in the page)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA if present, else CPU), cpu, cuda, cuda:1 ...")
    parser.add_argument(
        "--max-queue",
        type=int,
        default=DEFAULT_MAX_QUEUE,
        help="requests allowed to wait; more get a 'queue is full' answer",
    )
    parser.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY,
        help="sampling jobs run at once (they share the loaded models)"
    )
    return parser.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    dir7.keep_freed_memory()  # CPU sampling ~10% faster when freed activations stay in the heap
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up probes are noise
    try:
        models = ModelRegistry.discover(args.checkpoint, device=args.device)
        service = models.get()  # the default model now, warm-up included; the others on first use
    except (FileNotFoundError, ValueError, dir7.CheckpointError) as exc:
        # A missing/broken checkpoint or an unavailable device is a configuration error: say so plainly.
        sys.exit(f"error: cannot load the model: {exc}")
    logging.getLogger("dir7.app").info(
        "models: %s; default %s (trained=%s) on %s", ", ".join(models.names), service.name, service.trained,
        service.device,
    )
    demo = build_demo(models, max_queue=args.max_queue, concurrency_limit=args.concurrency)
    # allowed_paths stays unset: nothing on disk is served beyond Gradio's own cache.
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())


if __name__ == "__main__":
    main()
