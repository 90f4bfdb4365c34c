"""Data-parallel curvature over ``torch.distributed`` (DESIGN §7).

Each rank holds a shard of the Hessian set; products are all-reduced with weights n_rank / N, so
every rank holds the Hessian of the mean loss over all N samples. For models whose Lanczos basis
outgrows one device, :class:`ShardedHessianOperator` also splits every vector over the ranks;
for a model that itself outgrows one, :class:`ParamShardedHessianOperator` splits the parameters
too (FSDP2's layout) and gathers one stage at a time.
Run the eigensolver with the same seed on every rank: it then takes identical steps everywhere
(only rank 0 should write).
"""

from landscope.distributed.operator import DistributedHessianOperator, is_main_process
from landscope.distributed.param_sharded import ParamShardedHessianOperator, ParamShardLayout
from landscope.distributed.sharded import ShardedHessianOperator, ShardedOperator, ShardLayout

__all__ = [
    "DistributedHessianOperator",
    "ParamShardLayout",
    "ParamShardedHessianOperator",
    "ShardedHessianOperator",
    "ShardedOperator",
    "ShardLayout",
    "is_main_process",
]
