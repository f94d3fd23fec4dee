"""Remote evaluators: LLMs behind an HTTP API answer the (compressed) prompts.

* ``evaluator`` — the plan's evaluator block (provider, model, base_url, key variable, limits); no I/O.
* ``prices`` — the shipped, dated price table and the cost of a request.
* ``wire`` — the two wire protocols (OpenAI-compatible chat/completions, Anthropic Messages).
* ``cache`` — the persistent response cache (SQLite in the user cache directory).
* ``client`` — httpx + tenacity: concurrency cap, retries honouring Retry-After, budget, live counters.
* ``backend`` — the backend the runner measures with when a plan has an evaluator ("generate" only).

Importing this package loads neither httpx nor torch.
"""
