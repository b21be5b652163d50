"""Common code for every Post-Training Spaces app: models, chat templates, memory math, grading.

Everything here is plain Python (no gradio imports outside `shared.ui`) so the apps, the command
lines, `train/` and the tests all call the same functions.
"""
