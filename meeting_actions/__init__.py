"""Meeting recordings in, action items in Firestore out.

Modules, one concern each:
    config        settings read once from the environment
    logs          one JSON object per log line, for Cloud Logging
    transport     the pooled HTTP session, timeouts and bounded retries
    assemblyai    AssemblyAI's transcript API and LLM Gateway
    action_items  the prompt, the JSON schema and parsing of the answer
    inputs        validation of what callers send to the functions
    record        the Firestore document of one meeting, and its claim
    pipeline      the flow that ties them together
"""
