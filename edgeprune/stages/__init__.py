"""The pipeline's stages, one module each, each taking and returning frozen dataclasses:
load → analyse → baseline → (search, select: ``edgeprune.search``) → finish → (deploy: ``edgeprune.deploy``)
→ write (``edgeprune.report``). ``edgeprune.pipeline`` runs them in order."""
