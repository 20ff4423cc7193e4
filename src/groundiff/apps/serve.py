"""`groundiff serve`: a web page that draws a prompt and shows a mask for each object it names.

The page (Gradio, the `web` extra) has a prompt box whose objects are parsed into an editable list,
seed, steps and guidance; it shows the image, an overlay with a legend, each object's mask, and
offers the mask PNGs, the overlay and a COCO JSON for download. Bad input gets a sentence on the
page, never a stack trace. By default it serves the mini world with its shipped checkpoint. A
second tab grounds an uploaded image (`groundiff.ground.ground_image`).
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from groundiff.config import option
from groundiff.ground import DEFAULT_NOISE_STEP

log = logging.getLogger(__name__)

EXAMPLE_PROMPT = "a photograph of a yellow triangle and a green cross"
MAX_OBJECTS = 8
MAX_STEPS = 100
INSTALL_HINT = 'groundiff serve needs Gradio: pip install "groundiff[web]" (or pip install -e ".[web]" in a checkout).'


@dataclass
class ServeConfig:
    """A local web page for grounded generation (`groundiff serve`)."""

    model: str | None = option(
        None, "the diffusion model; default: the checkpoint's, or miniworld without --checkpoint"
    )
    checkpoint: str | None = option(None, "a grounding checkpoint folder; default: the world's shipped one")
    host: str = option("127.0.0.1", "address to listen on; 0.0.0.0 opens the page to your network")
    port: int = option(7860, "port; 0 picks a free one")
    dtype: Literal["float32", "float16", "bfloat16"] = option("float32", "")
    device: str | None = option(None, "")
    max_objects: int = option(MAX_OBJECTS, "most objects one request may name")

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in [0, 65535], got {self.port}.")
        if self.max_objects < 1:
            raise ValueError(f"--max-objects must be at least 1, got {self.max_objects}.")


@dataclass
class PageResult:
    """What one click shows: a status sentence, and (when it worked) the pictures and downloads."""

    message: str
    image: Any = None
    overlay: Any = None
    masks: list[tuple[Any, str]] | None = None
    files: list[str] | None = None

    @property
    def ok(self) -> bool:
        return self.image is not None


class RequestError(ValueError):
    """Input the page answers with a sentence instead of an image."""


def parse_objects(text: str) -> list[str]:
    """Comma-separated object names, stripped, empty entries dropped: "red ring, blue disc" → two names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def check_objects(objects: list[str], *, max_objects: int) -> None:
    """Refuse an object list the page cannot answer (drawn or uploaded image alike).

    Raises:
        RequestError: no or too many objects, or an object twice.
    """
    if not objects:
        raise RequestError("Name the objects to find, separated by commas (e.g. “yellow triangle, green cross”).")
    if len(objects) > max_objects:
        raise RequestError(
            f"{len(objects)} objects asked for; this page grounds at most {max_objects} per image. Remove some."
        )
    seen: set[str] = set()
    for name in objects:
        if name.lower() in seen:
            raise RequestError(f"“{name}” is listed twice; name each object once.")
        seen.add(name.lower())


def check_request(prompt: str, objects: list[str], *, max_objects: int) -> None:
    """Refuse what the model cannot answer, with a sentence that says what to change.

    Raises:
        RequestError: empty prompt, an object list `check_objects` refuses, or an object the prompt does not name.
    """
    if not prompt.strip():
        raise RequestError(f"Enter a prompt, e.g. “{EXAMPLE_PROMPT}”.")
    check_objects(objects, max_objects=max_objects)
    for name in objects:
        if not re.search(rf"\b{re.escape(name.lower())}\b", prompt.lower()):
            raise RequestError(
                f"“{name}” is not in the prompt. The model finds objects the prompt names: add it to the prompt "
                f"or remove it from the objects."
            )


class Grounder:
    """The loaded pipeline and grounding model, answering page requests one at a time."""

    def __init__(self, pipe: Any, model: Any, meta: Any, *, max_objects: int = MAX_OBJECTS, out: Path | None = None):
        self.pipe, self.model, self.meta = pipe, model, meta
        self.max_objects = max_objects
        # Files offered for download; Gradio serves them from here.
        self.out = out or Path(tempfile.mkdtemp(prefix="groundiff-serve-"))
        self.requests = 0

    @classmethod
    def load(cls, config: ServeConfig) -> Grounder:
        from groundiff.ground import resolve_checkpoint
        from groundiff.model.checkpoint import load_grounding_model
        from groundiff.sd.pipelines import load_pipeline

        checkpoint, model_name = resolve_checkpoint(config.checkpoint, config.model)
        model, meta = load_grounding_model(checkpoint)
        pipe = load_pipeline(model_name or meta.text_model, dtype=config.dtype, device=config.device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, model.to(pipe.device), meta, max_objects=config.max_objects)

    @property
    def defaults(self) -> dict[str, Any]:
        """Steps and guidance of the training set: the settings the model knows best."""
        return {"steps": int(self.meta.set_config["steps"]), "guidance": float(self.meta.set_config["guidance_scale"])}

    def objects_of(self, prompt: str) -> str:
        """The objects of a prompt in the training template, comma-separated; "" when it does not follow it."""
        from groundiff.ground import objects_from_prompt

        try:
            return ", ".join(objects_from_prompt(prompt, self.meta.set_config["template"]))
        except ValueError:
            return ""

    def answer(
        self,
        prompt: str,
        objects_text: str,
        seed: float,
        steps: float,
        guidance: float,
        on_step: Callable[[int, int], None] | None = None,
    ) -> PageResult:
        """Ground one request; every refusal and failure becomes the page's message. `on_step` sees
        (denoising steps done, steps) while the image is drawn."""
        objects = parse_objects(objects_text) or parse_objects(self.objects_of(prompt))

        def work() -> PageResult:
            check_request(prompt, objects, max_objects=self.max_objects)
            if not 1 <= int(steps) <= MAX_STEPS:
                raise RequestError(f"Steps must be between 1 and {MAX_STEPS}, got {steps}.")
            return self._ground(prompt.strip(), objects, int(seed), int(steps), float(guidance), on_step)

        return _answered(work)

    def answer_image(self, image: Any, objects_text: str, seed: float, noise_step: float) -> PageResult:
        """Ground an uploaded image ((H, W, 3) uint8); every refusal and failure becomes the page's message."""
        from groundiff.ground import ground_image

        objects = parse_objects(objects_text)

        def work() -> PageResult:
            if image is None:
                raise RequestError("Upload an image first (PNG or JPEG).")
            check_objects(objects, max_objects=self.max_objects)
            start = time.perf_counter()
            result = ground_image(
                self.pipe, self.model, self.meta, image, objects, noise_step=int(noise_step), seed=int(seed)
            )
            detail = f"noise of step {int(noise_step)} of a {self.defaults['steps']}-step run, seed {int(seed)}"
            return self._page(result, objects, start, detail)

        return _answered(work)

    def _ground(
        self,
        prompt: str,
        objects: list[str],
        seed: int,
        steps: int,
        guidance: float,
        on_step: Callable[[int, int], None] | None,
    ) -> PageResult:
        from groundiff.ground import ground

        start = time.perf_counter()
        result = ground(
            self.pipe,
            self.model,
            self.meta,
            prompt,
            objects=objects,
            seed=seed,
            steps=steps,
            guidance_scale=guidance,
            on_step=on_step,
        )
        return self._page(result, objects, start, f"seed {seed}, {steps} steps, guidance {guidance:g}")

    def _page(self, result: Any, objects: list[str], start: float, detail: str) -> PageResult:
        """Write a result's files (image, masks, overlay, COCO JSON) and say what was done."""
        import json

        from groundiff.data.coco import coco_document
        from groundiff.ground import write_grounding

        self.requests += 1
        folder = self.out / f"request-{self.requests:05d}"
        paths = write_grounding(result, folder)
        coco = folder / "coco.json"
        coco.write_text(json.dumps(coco_document("image.png", result.masks), indent=1))
        masks = [(_enlarged(path).as_posix(), name) for name, path in zip(objects, paths[1:-1], strict=True)]
        missing = [name for name, found in result.found.items() if not found]
        note = f" Not found: {', '.join(missing)}." if missing else ""
        return PageResult(
            message=f"**Grounded** {len(objects)} object{'s' if len(objects) > 1 else ''} in "
            f"{time.perf_counter() - start:.1f} s ({detail}).{note}",
            image=_enlarged(paths[0]).as_posix(),
            overlay=paths[-1].as_posix(),
            masks=masks,
            files=[p.as_posix() for p in [*paths[1:], coco]],
        )


def _answered(work: Callable[[], PageResult]) -> PageResult:
    """`work()`, with every refusal (bad input: ValueError) and failure turned into the page's message."""
    try:
        return work()
    except ValueError as error:
        return PageResult(message=f"**Cannot ground this.** {error}")
    except Exception as error:  # the page must answer; the log keeps the traceback
        log.exception("request failed")
        return PageResult(message=f"**Grounding failed** ({type(error).__name__}: {error}).")


DISPLAY_SIDE = 256


def _enlarged(path: Path) -> Path:
    """A copy of a small picture scaled up (nearest pixel) to `DISPLAY_SIDE` for the page; big ones as they are."""
    from PIL import Image

    picture = Image.open(path)
    if max(picture.size) >= DISPLAY_SIDE:
        return path
    scale = DISPLAY_SIDE // max(picture.size)
    target = path.parent / "display" / path.name
    target.parent.mkdir(exist_ok=True)
    picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST).save(target)
    return target


def import_gradio() -> Any:
    """Gradio, or an ImportError that says how to install it (it is an optional extra)."""
    try:
        import gradio
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return gradio


def _results_panel(gr: Any, prefix: str) -> tuple[Any, ...]:
    """Image, overlay, masks and downloads, with element ids `<prefix>image` etc. (the browser test finds them)."""
    with gr.Row():
        image = gr.Image(label="Image", type="filepath", height=320, elem_id=f"{prefix}image")
        overlay = gr.Image(label="Overlay", type="filepath", height=320, elem_id=f"{prefix}overlay")
    masks = gr.Gallery(label="Masks", columns=4, object_fit="contain", elem_id=f"{prefix}masks")
    files = gr.File(label="Downloads: masks, overlay, COCO JSON", file_count="multiple", elem_id=f"{prefix}files")
    return image, overlay, masks, files


def build_page(grounder: Grounder) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    gr = import_gradio()

    defaults = grounder.defaults
    with gr.Blocks(title="groundiff") as page:
        gr.Markdown(
            "# groundiff\nA mask for every object the prompt names, read from the diffusion model's own features."
        )
        with gr.Tab("Draw and ground"), gr.Row():
            with gr.Column(scale=1):
                prompt = gr.Textbox(label="Prompt", value=EXAMPLE_PROMPT, elem_id="prompt")
                objects = gr.Textbox(
                    label="Objects (comma-separated; parsed from the prompt, editable)",
                    value=grounder.objects_of(EXAMPLE_PROMPT),
                    elem_id="objects",
                )
                with gr.Row():
                    seed = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
                    steps = gr.Slider(1, MAX_STEPS, value=defaults["steps"], step=1, label="Steps", elem_id="steps")
                    guidance = gr.Slider(
                        1.0, 15.0, value=defaults["guidance"], step=0.5, label="Guidance", elem_id="guidance"
                    )
                run = gr.Button("Draw and ground", variant="primary", elem_id="run")
                status = gr.Markdown(elem_id="status")
            with gr.Column(scale=2):
                drawn_outputs = _results_panel(gr, "")
        with gr.Tab("Ground an image"), gr.Row():
            with gr.Column(scale=1):
                upload = gr.Image(label="Image (PNG or JPEG)", type="numpy", elem_id="upload")
                upload_objects = gr.Textbox(label="Objects (comma-separated)", elem_id="upload-objects")
                with gr.Row():
                    upload_seed = gr.Number(label="Noise seed", value=0, precision=0, minimum=0)
                    noise_step = gr.Slider(
                        -defaults["steps"],
                        -1,
                        value=DEFAULT_NOISE_STEP,
                        step=1,
                        label="Noise of denoising step (-1: the last, least noise)",
                        elem_id="noise-step",
                    )
                run_upload = gr.Button("Ground", variant="primary", elem_id="run-upload")
                upload_status = gr.Markdown(elem_id="upload-status")
            with gr.Column(scale=2):
                upload_outputs = _results_panel(gr, "upload-")

        def on_run(
            prompt_text: str,
            objects_text: str,
            seed_value: float,
            steps_value: float,
            scale: float,
            progress: Any = gr.Progress(),  # noqa: B008 (Gradio's way to ask for a progress bar)
        ) -> tuple:
            def drawn(done: int, total: int) -> None:
                progress(done / total, desc=f"drawing: step {done} of {total}")

            result = grounder.answer(prompt_text, objects_text, seed_value or 0, steps_value, scale, drawn)
            return result.message, result.image, result.overlay, result.masks, result.files

        def on_upload(image: Any, objects_text: str, seed_value: float, step: float) -> tuple:
            result = grounder.answer_image(image, objects_text, seed_value or 0, step)
            return result.message, result.image, result.overlay, result.masks, result.files

        prompt.change(grounder.objects_of, inputs=prompt, outputs=objects)
        # One model, one request at a time; the others queue.
        run.click(
            on_run,
            inputs=[prompt, objects, seed, steps, guidance],
            outputs=[status, *drawn_outputs],
            concurrency_limit=1,
            concurrency_id="model",
        )
        run_upload.click(
            on_upload,
            inputs=[upload, upload_objects, upload_seed, noise_step],
            outputs=[upload_status, *upload_outputs],
            concurrency_limit=1,
            concurrency_id="model",
        )
    return page


def serve(config: ServeConfig, *, block: bool = True, grounder: Grounder | None = None) -> tuple[Any, str]:
    """Load the model and launch the page; returns (the Blocks, its local URL). `block=False` returns at once."""
    import_gradio()  # before the (slow) model loads
    page = build_page(grounder or Grounder.load(config))
    page.queue()
    _, url, _ = page.launch(
        server_name=config.host,
        server_port=config.port or _free_port(config.host),
        prevent_thread_lock=not block,
        quiet=not block,
        share=False,
    )
    return page, url


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
