"""Rendering results for people: terminal tables, figures and the HTML summary."""
