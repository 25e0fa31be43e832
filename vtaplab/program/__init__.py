"""What ``pulumi up`` runs: the stack's config, its composition and the VMs' user data.

- ``config``: the stack config read once, validated, frozen into a ``LabConfig``.
- ``stack``: the composition: a resource group, one provider, one consumer per scenario.
- ``userdata``: cloud-init user data rendered from the templates in ``cloudinit/``.
"""
