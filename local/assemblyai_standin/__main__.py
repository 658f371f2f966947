"""python -m assemblyai_standin --port 8301 --api-key KEY [timing options]"""

import argparse

from .server import Settings, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8301)
    parser.add_argument("--api-key", required=True)
    for field, default in Settings().__dict__.items():
        parser.add_argument("--" + field.replace("_", "-"), type=float, default=default)
    args = vars(parser.parse_args())
    host, port, key = args.pop("host"), args.pop("port"), args.pop("api_key")
    serve(host, port, key, Settings(**args))


main()
