"""ScaNN configuration per shard size (ScaNN's rules of thumb) and its overrides."""

import pytest

from mel.indexes import IndexSettings, ShardSearchConfig, shard_search_config


def test_brute_force_below_20k():
    config = shard_search_config(19_999, IndexSettings())
    assert config.algorithm == "brute_force"
    assert config.entries == 19_999


def test_asymmetric_hashing_with_reordering_below_100k():
    config = shard_search_config(50_000, IndexSettings())
    assert config.algorithm == "asymmetric_hashing"
    assert config.dims_per_block == 2
    assert config.anisotropic_quantization_threshold == pytest.approx(0.2)
    assert config.reorder_num_neighbors == IndexSettings().reorder_num_neighbors
    assert config.training_sample_size == 50_000


def test_tree_with_square_root_leaves_above_100k():
    config = shard_search_config(1_000_000, IndexSettings())
    assert config.algorithm == "tree_ah"
    assert config.num_leaves == 1000
    assert config.leaves_to_search == 1000 // IndexSettings().leaves_to_search_divisor
    assert config.training_sample_size == IndexSettings().training_sample_size


def test_overrides_win():
    settings = IndexSettings(num_leaves=300, leaves_to_search=40, reorder_num_neighbors=500, training_sample_size=5000)
    config = shard_search_config(250_000, settings)
    assert (config.num_leaves, config.leaves_to_search, config.reorder_num_neighbors) == (300, 40, 500)
    assert config.training_sample_size == 5000
    settings = IndexSettings(brute_force_below=1000, partition_above=2000)
    assert shard_search_config(5_000, settings).algorithm == "tree_ah"


def test_without_scann_every_shard_is_exact():
    assert shard_search_config(1_000_000, IndexSettings(scann=False)).algorithm == "exact"


def test_tiny_shards_fall_back_to_simpler_algorithms():
    settings = IndexSettings(brute_force_below=0, partition_above=0)
    assert shard_search_config(100, settings).algorithm == "brute_force"  # too few points for AH
    small_tree = shard_search_config(300, settings)
    assert small_tree.algorithm == "tree_ah" and small_tree.num_leaves <= 300 // 20


def test_settings_round_trip_through_json():
    settings = IndexSettings(shard_size=7, leaves_to_search=3)
    assert IndexSettings.from_json(settings.to_json()) == settings
    config = shard_search_config(200_000, settings.__class__())
    assert ShardSearchConfig.from_json(config.to_json()) == config


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        IndexSettings(shard_size=0)
    with pytest.raises(ValueError):
        IndexSettings(leaves_to_search=0)
