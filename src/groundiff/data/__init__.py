"""Synthetic grounding datasets: vocabularies and splits, sample records, shards, generation."""

from groundiff.data.annotate import label_set, read_scores, score_set
from groundiff.data.config import GenerateConfig
from groundiff.data.dataset import GroundingDataset
from groundiff.data.generate import GenerateReport, generate_set
from groundiff.data.records import SampleRecord
from groundiff.data.shards import ShardError, iter_records
from groundiff.data.vocabulary import SET_KINDS, VOC_SPLIT1, ClassSplit, load_split

__all__ = [
    "SET_KINDS",
    "VOC_SPLIT1",
    "ClassSplit",
    "GenerateConfig",
    "GenerateReport",
    "GroundingDataset",
    "SampleRecord",
    "ShardError",
    "generate_set",
    "iter_records",
    "label_set",
    "read_scores",
    "score_set",
    "load_split",
]
