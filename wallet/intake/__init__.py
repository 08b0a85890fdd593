"""Activity intake: green actions reported by partners or the holder, received before judgement."""
