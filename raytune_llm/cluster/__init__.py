"""Running raytune_llm on a real Ray cluster.

`specs` reads cluster definitions (Ray cluster-launcher YAMLs, KubeRay `RayCluster` and
`RayJob` manifests) into node groups; `validate` (with `launcher` and `kuberay`) checks
them; `preflight`, `workdir` and `submit` send a run to the Ray Jobs API after checking,
on the laptop, everything that can be checked there; `jobs` lists, follows and stops
jobs; `auth` and `connection` handle addresses and Ray's token authentication; `cli`
holds the `raytune-llm cluster|submit|jobs` commands. Nothing here starts or joins Ray
in-process: it only talks HTTP to the cluster's dashboard.
"""
