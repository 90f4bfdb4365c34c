"""Data-parallel curvature over ``torch.distributed`` (DESIGN §7).

Each rank holds a shard of the Hessian set; products are all-reduced with weights n_rank / N, so
every rank holds the Hessian of the mean loss over all N samples. Run the eigensolver with the
same seed on every rank: it then takes identical steps everywhere (only rank 0 should write).
"""

from landscope.distributed.operator import DistributedHessianOperator, is_main_process

__all__ = ["DistributedHessianOperator", "is_main_process"]
