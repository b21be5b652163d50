"""Common code for every Post-Training Spaces app: loading and generation, chat templates, memory math, grading.

Everything here is plain Python (no gradio imports), so the apps, the command lines, `train/` and the tests
all call the same functions; `shared/views/` builds what each app shows. See docs/ARCHITECTURE.md.
"""
