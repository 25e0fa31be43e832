"""The vtaplab Pulumi program: read the stack's config, build the stack, export its outputs."""

import pulumi

from vtaplab.program import config, stack

try:
    lab = config.load()
    stack.check_composable(lab)
except (config.ConfigError, stack.StackError) as error:
    # One line naming key, value and what is accepted: no Python traceback for bad config.
    raise pulumi.RunError(str(error)) from None

for name, value in stack.build(lab).items():
    pulumi.export(name, value)
