"""Talking to Azure and to the lab's VMs.

- ``arm``: a small ARM REST client (long-running operations, retries, error envelopes).
- ``arm_bodies``: the ARM request bodies the lab is about, built from typed parameters.
- ``attempts``: the rejected attempts (r1, b1): one ARM request each, its answer kept.
- ``fastpath``: deallocate then start a tapped VM (``python -m vtaplab fastpath``).
- ``run``: the shell commands of an evidence run on the VMs.
- ``ssh``: key-only SSH with pinned host keys, bounded retries, SFTP.
- ``fetch``: bring a run's evidence back over SFTP and judge it (``python -m vtaplab fetch``).
- ``collect``: ``python -m vtaplab evidence STACK``: the run again over SSH on a deployed stack.
"""
