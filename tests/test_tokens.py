import pytest

from asr.tokens import Tokenizer, TokenizerError, read_units, train_units, write_units


def test_units_round_trip_and_validation(tmp_path):
    write_units(["<blank>", "<unk>", "你", "好", "<sos/eos>"], tmp_path / "units.txt")
    assert read_units(tmp_path / "units.txt")[2] == "你"
    (tmp_path / "bad.txt").write_text("<unk> 0\n<blank> 1\n")
    with pytest.raises(TokenizerError, match="id 0 must be <blank>"):
        read_units(tmp_path / "bad.txt")
    (tmp_path / "gap.txt").write_text("<blank> 0\n你 2\n")
    with pytest.raises(TokenizerError, match="contiguous"):
        read_units(tmp_path / "gap.txt")
    (tmp_path / "junk.txt").write_text("<blank> 0\nnonsense\n")
    with pytest.raises(TokenizerError, match="expected 'unit id'"):
        read_units(tmp_path / "junk.txt")


def test_char_tokenizer_joins_han_without_spaces():
    tok = Tokenizer(["<blank>", "<unk>", "你", "好", "世", "界", "<sos/eos>"])
    ids = tok.encode("你好 世界")
    assert ids == [2, 3, 4, 5]
    assert tok.decode(ids) == "你好世界"
    assert tok.encode("你坏") == [2, 1]  # unknown -> <unk>


def test_bilingual_tokenizer_with_sentencepiece(tmp_path):
    texts = ["打开WI FI网络", "我用IPHONE拍照", "HELLO WORLD", "你好世界", "请说HELLO"] * 3
    tok = train_units(texts, tmp_path)
    assert (tmp_path / "bpe.model").exists()
    units = read_units(tmp_path / "units.txt")
    assert units[0] == "<blank>" and units[-1] == "<sos/eos>"
    for text in ["打开WI FI网络", "我用IPHONE拍照", "HELLO WORLD", "请说HELLO"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode("hello world")) == "HELLO WORLD"  # Latin is upper-cased


def test_sentencepiece_pieces_must_be_in_unit_table(tmp_path):
    train_units(["HELLO WORLD 你好"] * 3, tmp_path)
    write_units(["<blank>", "<unk>", "你", "好"], tmp_path / "units.txt")
    with pytest.raises(TokenizerError, match="not in the unit table"):
        Tokenizer.from_dir(tmp_path)
