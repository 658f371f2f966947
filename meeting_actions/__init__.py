"""Meeting recordings in, action items in Firestore out.

Modules, one concern each:
    config        settings read once from the environment
    logs          one JSON object per log line, for Cloud Logging
    transport     the pooled HTTP session, timeouts and bounded retries
    text          the one check for text from outside: refuse or repair, in bytes
    assemblyai    AssemblyAI's transcript API and LLM Gateway
    prompt        the action-item prompts and JSON schemas: the gateway request
    action_items  parsing of the answer, its byte caps, the readable list
    inputs        validation of what callers send to the functions
    record        the Firestore document of one meeting, and its claim
    lifecycle     the states, who moves each on and by when, failure kinds, results
    lease         the one claim on a document
    hints         what the webhook URL carries for the webhook
    submit        what submit does: AssemblyAI, then the queued meeting
    transcript_ready  a delivery (or the sweep) claims a transcribed meeting
    generate      the claimed meeting: the gateway once, the result written
    outcomes      how an attempt ends: final result, wait, retry or error
    regenerate    a person's request from the console
    console       what a person may set on a document, and how each field is read
    sweep         the scheduled sweep: what deliveries could not finish
    uploads       the storage trigger: one submission per object version
    storage_object  an uploaded object: checked, its options, how AssemblyAI reads it
    notify        signed notifications of each result, and their state on the document
    notify_address  where a notification may go (the SSRF checks)
    notify_http   one attempt: a plain HTTP POST under one deadline
    utterances    the turns read from the transcript, and the prompt lines
    moments       quote checks and links
    tokens        the words of a quote or a turn, by character where a script has no spaces
    languages     AssemblyAI's language codes, named in words; detection options
    models        which LLM Gateway models to ask, in order, and which may be asked now
    privacy       PII redaction options, and keeping redacted PII out of the prompt
    retention     expire_at on every document, and the transcript deleted once at AssemblyAI
"""
