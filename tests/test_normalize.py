import pytest

pytest.importorskip("cn2an", reason="cn2an not installed (pip install -r asr/data/requirements.txt)")

from asr.data.normalize import normalize_text


@pytest.mark.parametrize(
    "raw, spoken",
    [
        # numbers
        ("2个人买了2000元的东西", "两个人买了两千元的东西"),
        ("总共1,234,567元", "总共一百二十三万四千五百六十七元"),
        ("价格¥99.5", "价格九十九点五元"),
        ("第2个", "第二个"),
        ("3-5天", "三到五天"),
        ("1/3的人", "三分之一的人"),
        ("比分3:1", "比分三比一"),
        ("今天气温-5℃", "今天气温零下五摄氏度"),
        ("G20峰会", "G二十峰会"),
        # dates and times
        ("１９９８年１月１日，江泽民发表讲话。", "一九九八年一月一日江泽民发表讲话"),
        ("2020-03-05发货", "二零二零年三月五日发货"),
        ("1998-2000年", "一九九八到二零零零年"),
        ("下午3:30开会", "下午三点三十分开会"),
        ("会议在2:05开始", "会议在两点零五分开始"),
        ("9:00见", "九点见"),
        # percentages
        ("增长了12.5%", "增长了百分之十二点五"),
        ("5%-10%", "百分之五到百分之十"),
        ("出生率为3‰", "出生率为千分之三"),
        # phone / account numbers: digit by digit, 1 as 幺
        ("我的电话是138-1234-5678", "我的电话是幺三八幺二三四五六七八"),
        ("13912345678", "幺三九幺二三四五六七八"),
        ("请拨打10086或95588", "请拨打幺零零八六或九五五八八"),
        ("0755-88886666", "零七五五八八八八六六六六"),
        ("400-810-8888", "四零零八幺零八八八八"),
        ("尾号1234的银行卡", "尾号幺二三四的银行卡"),
        ("卡号6222 0212 3456", "卡号六二二二零二幺二三四五六"),
        ("订单号为2023110500123", "订单号为二零二三幺幺零五零零幺二三"),
        ("验证码是 4321。", "验证码是四三二幺"),
        # Latin words
        ("请打开app然后check in", "请打开APP然后CHECK IN"),
        ("ThinkPad  很好用", "THINKPAD很好用"),
        ("don't worry", "DON'T WORRY"),
        ("ＷＴＯ成员", "WTO成员"),
        # punctuation, spaces between Han, unspeakable characters
        ("他说：“你好！”——好的……", "他说你好好的"),
        ("我 们 走 吧", "我们走吧"),
        ("笑死了😂★♪", "笑死了"),
        ("", ""),
    ],
)
def test_normalize(raw, spoken):
    assert normalize_text(raw) == spoken


def test_output_alphabet():
    text = normalize_text("【通知】2024年3月8日14:30，VIP客户张三（尾号0921）在A区#3号柜台办理了5笔业务，共计￥12,800.50元！")
    assert text
    for ch in text:
        assert ("\u4e00" <= ch <= "\u9fff") or ("A" <= ch <= "Z") or ch in " '", ch
    assert "  " not in text and text == text.strip()
