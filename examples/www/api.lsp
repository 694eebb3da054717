<?lsp response:json({ time = os.time(), ticks = app.ticks, method = request:method(), query = request:data() }) ?>
