"""What qapp's users would otherwise run: a synchronous Flask app under gunicorn."""
