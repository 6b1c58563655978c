"""How a mix lays out, conceals and encodes: MixOptions (defined in skymix.options, with its
JSON form; imported here so that ``skymix.mix.MixOptions`` keeps working).

The job driver that was here is skymix.job now (MixJob, and the second pass in ``_Mix``, whose
``run()`` writes the recording and the sidecars); the report is skymix.report; a participant's
decoders and concealment are skymix.sources; each output frame is skymix.scene.
"""

from __future__ import annotations

from .options import MixOptions

__all__ = ["MixOptions"]
