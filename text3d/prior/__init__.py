"""The embedded shapes prior: the analytic world it is trained on (:mod:`.shapes`), its model
(:mod:`.model`), its training (:mod:`.training`, ``text3d train-prior``) and evaluation
(:mod:`.evaluation`, and :mod:`.scene_eval`: a run's scene scored against the analytic shape).
The prior is used through ``text3d.guidance.pixel_prior`` (``prior.type: pixel``).

May import: ``text3d.core``, ``text3d.renderers``, ``text3d.scene``.
"""
