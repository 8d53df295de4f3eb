"""Every error a user must act on, in one family. The message says what was wrong, where, and what to do; the
class says how the command ends (`exit_code`), so the CLI maps errors to exit codes in one place.

Exit codes: 2 the request cannot be done as given (bad options, a bad recipe, a folder holding files medloom did
not write), 1 the work was tried and failed (a cluster that does not answer, a plan refused by --strict), 3
another medloom process holds the loom or folder. Failures of one input are not errors: they are quarantine rows
(`imaging.DecodeError` carries their reason).
"""

from __future__ import annotations


class MedloomError(Exception):
    """The base of the family: exit 2 unless a subclass says otherwise."""

    exit_code = 2


# ---- the request (exit 2) ------------------------------------------------------------------------------------


class RecipeError(MedloomError, ValueError):
    """A recipe that cannot be run; the message lists every problem found."""


class UnknownTermError(MedloomError, ValueError):
    """A term that the vocabulary does not know; carries the closest known terms."""

    def __init__(self, kind: str, term: str, suggestions: list[str]):
        self.kind, self.term, self.suggestions = kind, term, suggestions
        hint = f" Closest known terms: {', '.join(suggestions)}." if suggestions else ""
        super().__init__(
            f"unknown {kind} {term!r}.{hint} To add it, declare it in the recipe under `vocabulary: {{{kind}: [{term!r}]}}`."
        )


class ForeignFileError(MedloomError, OSError):
    """A write or removal that would touch a file medloom did not write."""


class AnnotateError(MedloomError, ValueError):
    pass


class ProposeError(MedloomError, ValueError):
    """`medloom propose`: an unknown method, a bad parameter, a filter that selects nothing to accept."""


class ExportError(MedloomError, ValueError):
    """A problem with the request (bad --where, an occupied folder); the message says what to do."""


class DicomExportError(ExportError):
    pass


class TrainingExportError(ExportError):
    pass


class ClipBenchmarkError(ExportError):
    pass


class PublishError(MedloomError, ValueError):
    pass


class FetchError(MedloomError, ValueError):
    pass


class SubsetError(MedloomError, ValueError):
    pass


class RegistryError(MedloomError, ValueError):
    """A dataset, subset or registry that a published table (`registry/`) does not have."""


class ConceptError(MedloomError, ValueError):
    pass


class SplitError(MedloomError, ValueError):
    pass


class PlanError(MedloomError, ValueError):
    pass


class ModelSpecError(MedloomError, ValueError):
    pass


class EvalError(MedloomError, ValueError):
    pass


class CompareError(MedloomError, ValueError):
    pass


class ReportError(MedloomError, ValueError):
    pass


class TrainError(MedloomError, ValueError):
    pass


class LLMError(MedloomError, RuntimeError):
    """A request that failed after every retry (or that the server refused outright)."""


# ---- the work failed (exit 1) -------------------------------------------------------------------------------


class ExecutorError(MedloomError, RuntimeError):
    exit_code = 1


class CopiesInTraining(PlanError):
    """`cg plan --strict` found test images copied into training records."""

    exit_code = 1


# ---- someone else holds it (exit 3) ----------------------------------------------------------------------------


class LockHeld(MedloomError, RuntimeError):
    """Another medloom process holds the lock; the message names it."""

    exit_code = 3
