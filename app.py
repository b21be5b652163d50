"""Post-Training Spaces: every app of the collection, one tab each.

    pip install -r requirements.txt
    python app.py

Each app also runs alone: `python spaces/<name>/app.py`.
"""

import logging

import gradio as gr

from shared.apps import APP_NAMES, APP_TITLES, load_app

logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

APPS = {name: load_app(name) for name in APP_NAMES}

with gr.Blocks(title="Post-Training Spaces") as demo:
    gr.Markdown(
        "# Post-Training Spaces\n"
        "How a pretrained *base* model becomes an assistant — shown with real models that run on this "
        "machine. Start with **Base vs aligned**, look inside the **chat templates**, see why **LoRA and "
        "QLoRA** make fine-tuning fit, then check yourself in the **lesson**."
    )
    with gr.Tabs():
        for name in APP_NAMES:
            with gr.Tab(APP_TITLES[name], id=name):
                APPS[name].demo.render()

# Each app sets the concurrency of its own heavy events; this bounds everything else.
demo.queue(default_concurrency_limit=8)

if __name__ == "__main__":
    APPS["comparer"].warm_presets_in_background()
    APPS["quiz"].warm_up_in_background()
    demo.launch()
