"""Run output for people: console progress (console.py), metrics.jsonl and loss.png (metrics.py)."""
