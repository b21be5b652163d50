"""Post-Training Spaces: every app of the collection, one tab each.

    pip install -r requirements.txt
    python app.py

Each app also runs alone: `python spaces/<name>/app.py`.
"""

import logging

import gradio as gr

from shared.apps import APP_NAMES, load_app
from shared.compute import serve

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

APPS = {name: load_app(name) for name in APP_NAMES}

with gr.Blocks(title="Post-Training Spaces") as demo:
    gr.Markdown(
        "# Post-Training Spaces\n"
        "How a pretrained *base* model becomes an assistant — shown with real models that run on this "
        "machine. Start with **Base vs aligned**, look inside the **chat templates**, see why **LoRA and "
        "QLoRA** make fine-tuning fit, check yourself in the **lesson**, then watch SFT and DPO move "
        "log-probabilities token by token in **Log-probs & DPO**."
    )
    with gr.Tabs():
        for name, app in APPS.items():
            with gr.Tab(app.TITLE, id=name):
                app.demo.render()

# Each app sets the concurrency of its own heavy events; this bounds everything else.
demo.queue(default_concurrency_limit=8)

if __name__ == "__main__":
    for app in APPS.values():
        app.warm_up()
    serve(demo)
