"""steerlab inside vLLM: per-request steering and read-outs, as a vLLM plugin.

Install ``steerlab[vllm]`` in vLLM's environment; vLLM then loads the plugin in each of its
processes. Ask for steering per request with ``SamplingParams(extra_args=sampling_args(recipe))``
(over vLLM's OpenAI server: ``extra_body={"vllm_xargs": {"steerlab": json.dumps(...)}}``), and fetch
read-outs with ``fetch_reads``. Run vLLM with ``enforce_eager=True``.
"""

from .capture import capture_last
from .request import KEY, SITES, cache_salt, parse, sampling_args
from .results import fetch_reads

__all__ = ["KEY", "SITES", "cache_salt", "capture_last", "fetch_reads", "parse", "sampling_args"]
