"""A local stand-in for AssemblyAI's transcript API and LLM Gateway.

Built from the official spec files in spec/: same paths, same answer
shapes, same refusals (a wrong key, a body the spec rejects). Its LLM is a
set of deterministic rules, and says so in every answer. It is test and
demo infrastructure only: the product never imports it.
"""
