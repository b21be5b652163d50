"""Each app's views: HTML and Markdown builders as plain functions (no gradio import)."""
