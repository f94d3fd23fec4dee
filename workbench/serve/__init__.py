"""``workbench serve``: an OpenAI-compatible server over any model the workbench loads, optionally under a KV press.

``cli``: the command (flags checked before anything heavy is imported); ``engine``: generation (torch);
``schema``: the request bodies and the error shape; ``app``: the FastAPI app and uvicorn. Importing this package
imports none of them.
"""
