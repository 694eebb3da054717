<!doctype html>
<html><head><meta charset="utf-8"><title>remora demo</title>
<link rel="stylesheet" href="/style.css"></head><body>
<p class="nav"><a href="/">remora demo</a></p>
