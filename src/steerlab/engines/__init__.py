"""Other runtimes for the same recipes: ``vllm`` (a plugin for per-request steering and read-outs
inside vLLM) and ``ray`` (Ray Data pools for capture). ``wire`` is the JSON form both send recipes in."""
