"""The lab's Pulumi components: one module per concern.

``LinuxVm`` is the building block every VM goes through; ``SourceVnet`` (a consumer),
``CollectorService`` (the provider), ``ProxyNat`` and ``VtapAttachment`` compose it.
"""

from components.collector_service import CollectorService, CollectorServiceArgs
from components.linux_vm import LinuxVm, LinuxVmArgs, NsgRule
from components.proxy_nat import ProxyNat, ProxyNatArgs
from components.source_vnet import SourceVnet, SourceVnetArgs
from components.vtap_attachment import VtapAttachment, VtapAttachmentArgs

__all__ = [
    "CollectorService",
    "CollectorServiceArgs",
    "LinuxVm",
    "LinuxVmArgs",
    "NsgRule",
    "ProxyNat",
    "ProxyNatArgs",
    "SourceVnet",
    "SourceVnetArgs",
    "VtapAttachment",
    "VtapAttachmentArgs",
]
