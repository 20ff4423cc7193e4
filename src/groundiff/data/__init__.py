"""Synthetic grounding datasets: vocabularies and splits, sample records, shards, generation."""

from groundiff.data.generate import GenerateConfig, GenerateReport, generate_set
from groundiff.data.records import SampleRecord
from groundiff.data.shards import ShardError, iter_records
from groundiff.data.vocabulary import SET_KINDS, VOC_SPLIT1, ClassSplit, load_split

__all__ = [
    "SET_KINDS",
    "VOC_SPLIT1",
    "ClassSplit",
    "GenerateConfig",
    "GenerateReport",
    "SampleRecord",
    "ShardError",
    "generate_set",
    "iter_records",
    "load_split",
]
