"""Other servers on our sockets: asyncio (``aioserver``) and uvicorn (``uvicorn_drain``).
"""
