"""The floor for cold starts: a hello-world function that imports the same
client libraries as the product's HTTP functions."""

import functions_framework
import requests  # noqa: F401
from google.cloud import firestore  # noqa: F401


@functions_framework.http
def hello(request):
    return {"hello": "world"}
