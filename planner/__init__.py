"""cryoplan: a research and education planner for percutaneous cryoneurolysis.

Not a medical device; not for clinical use.

``import planner`` stays light: it imports no rendering library. Submodules are
imported where they are needed (``planner.imaging``, ``planner.thermal``, ...).
"""

__version__ = "0.1.0"

NOT_FOR_CLINICAL_USE = "Research and education only. Not for clinical use."
