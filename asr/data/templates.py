"""Call-center style sentences generated from templates.

Bank, telecom, e-commerce, delivery, utility, insurance, hospital and travel
customer-service turns (both agent and caller side), filled with names, places,
companies, phone numbers, amounts, dates and times from ``faker`` (zh_CN).
Sentences are written the way they would be typed (Arabic digits, ``%``,
``10:30``) and go through :func:`asr.data.normalize.normalize_text` later, so
they also exercise the normaliser.

Everything is driven by one ``random.Random`` and one seeded ``Faker``, so the
output is a deterministic function of the seed (for a given faker version).
"""

from __future__ import annotations

import random
from typing import Callable

BANKS = ["工商银行", "建设银行", "农业银行", "中国银行", "交通银行", "招商银行", "浦发银行",
         "民生银行", "兴业银行", "中信银行", "光大银行", "平安银行", "邮储银行", "华夏银行"]
CARD_KINDS = ["储蓄卡", "信用卡", "借记卡", "银行卡", "白金卡", "社保卡"]
CARRIERS = ["移动", "联通", "电信"]
PLANS = ["五十八元套餐", "八十八元套餐", "一百二十八元套餐", "畅享套餐", "亲情套餐", "流量套餐",
         "宽带融合套餐", "国际漫游套餐", "校园套餐", "老年套餐"]
PRODUCTS = ["洗衣机", "冰箱", "空调", "电视", "笔记本电脑", "手机", "耳机", "电饭煲", "微波炉",
            "热水器", "吸尘器", "羽绒服", "运动鞋", "床垫", "沙发", "婴儿车", "奶粉", "茶叶",
            "打印机", "显示器", "路由器", "电动牙刷", "行李箱", "保温杯", "台灯", "书包"]
COURIERS = ["顺丰", "中通", "圆通", "申通", "韵达", "京东物流", "邮政", "极兔", "德邦"]
DEPARTMENTS = ["内科", "外科", "儿科", "妇产科", "眼科", "口腔科", "皮肤科", "骨科", "心内科",
               "消化内科", "神经内科", "耳鼻喉科", "急诊科", "中医科", "康复科"]
GREETING_AGENT = ["您好", "你好", "喂您好", "您好欢迎致电", "早上好", "下午好"]
POLITE_END = ["请问还有什么可以帮您", "感谢您的来电", "祝您生活愉快", "请您对我的服务做出评价",
              "稍后会有短信发送到您的手机", "再见", "好的麻烦您了", "谢谢您的耐心等待"]
WEEKDAYS = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期天", "周一", "周二",
            "周三", "周四", "周五", "周六", "周日"]
DAYPARTS = ["上午", "下午", "晚上", "早上", "中午", "傍晚"]
ACRONYMS = ["APP", "VIP", "ATM", "USB", "WIFI", "ID", "QQ", "PIN", "OK", "CEO", "GPS", "SIM"]


class _Ctx:
    """Slot fillers bound to one rng and one seeded Faker."""

    def __init__(self, rng: random.Random, fake) -> None:
        self.r = rng
        self.f = fake

    # people and places
    def name(self) -> str:
        return self.f.name()

    def mr(self) -> str:
        return self.f.last_name() + self.r.choice(["先生", "女士", "小姐", "老师", "经理", "师傅"])

    def city(self) -> str:
        return self.f.city_name() if hasattr(self.f, "city_name") else self.f.city()

    def province(self) -> str:
        return self.f.province()

    def address(self) -> str:
        r = self.r
        parts = [self.f.province(), self.city(), self.f.district() + "区", self.f.street_name()]
        addr = "".join(parts) + f"{r.randint(1, 999)}号"
        if r.random() < 0.6:
            addr += f"{r.randint(1, 30)}栋{r.randint(1, 6)}单元{r.randint(1, 32)}0{r.randint(1, 8)}室"
        return addr

    def company(self) -> str:
        return self.f.company()

    # numbers
    def mobile(self) -> str:
        n = self.f.phone_number()
        r = self.r.random()
        if r < 0.3:
            return f"{n[:3]}-{n[3:7]}-{n[7:]}"
        if r < 0.45:
            return f"{n[:3]} {n[3:7]} {n[7:]}"
        return n

    def landline(self) -> str:
        area = self.r.choice(["010", "021", "020", "0755", "0571", "027", "028", "023", "025", "0512"])
        num = str(self.r.randint(2000000, 89999999))
        return f"{area}-{num}"

    def hotline(self) -> str:
        return self.r.choice(["10086", "10010", "10000", "95588", "95533", "95555", "95566",
                              "12345", "12306", "400-810-8888", "400-600-1234", "800-820-5100"])

    def tail4(self) -> str:
        return f"{self.r.randint(0, 9999):04d}"

    def card(self) -> str:
        n = self.f.credit_card_number()
        return " ".join(n[i:i + 4] for i in range(0, len(n), 4)) if self.r.random() < 0.5 else n

    def order(self) -> str:
        return str(self.r.randint(10**11, 10**13 - 1))

    def code6(self) -> str:
        return f"{self.r.randint(0, 999999):06d}"

    def amount(self) -> str:
        r = self.r.random()
        if r < 0.35:
            return str(self.r.randint(1, 999))
        if r < 0.6:
            return f"{self.r.randint(1, 99999)}.{self.r.randint(0, 99):02d}"
        if r < 0.8:
            return str(self.r.randint(1000, 200000))
        return f"{self.r.randint(1, 9)}.{self.r.randint(1, 9)}万"

    def pct(self) -> str:
        if self.r.random() < 0.5:
            return f"{self.r.randint(1, 99)}%"
        return f"{self.r.randint(0, 20)}.{self.r.randint(1, 99)}%"

    def small(self) -> int:
        return self.r.choice([1, 2, 2, 3, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 24, 30])

    def gb(self) -> str:
        return self.r.choice(["10G", "20G", "30G", "40G", "100G", "500M", "1G", "5G", "200M"])

    # dates and times
    def date(self) -> str:
        r = self.r.random()
        m, d = self.r.randint(1, 12), self.r.randint(1, 28)
        if r < 0.4:
            return f"{m}月{d}日"
        if r < 0.6:
            return f"{m}月{d}号"
        if r < 0.8:
            return f"{self.r.randint(2015, 2026)}年{m}月{d}日"
        return f"{self.r.randint(2018, 2026)}-{m:02d}-{d:02d} "

    def time(self) -> str:
        h, mi = self.r.randint(0, 23), self.r.choice([0, 5, 10, 15, 20, 30, 40, 45, 50, self.r.randint(0, 59)])
        r = self.r.random()
        if r < 0.5:
            return f"{h}:{mi:02d}"
        if r < 0.8:
            return f"{self.r.choice(DAYPARTS)}{self.r.randint(1, 12)}点"
        return f"{self.r.choice(DAYPARTS)}{self.r.randint(1, 11)}点半"

    def weekday(self) -> str:
        return self.r.choice(WEEKDAYS)

    def c(self, seq):
        return self.r.choice(seq)


TEMPLATES: list[Callable[[_Ctx], str]] = [
    # --- openings / closings ---------------------------------------------------
    lambda c: f"{c.c(GREETING_AGENT)}，{c.c(BANKS)}客服中心，工号{c.r.randint(1000, 99999)}为您服务",
    lambda c: f"{c.c(GREETING_AGENT)}，这里是{c.company()}，请问有什么可以帮您",
    lambda c: f"您好，请问是{c.mr()}吗？我是{c.company()}的客服",
    lambda c: f"{c.c(POLITE_END)}，{c.c(POLITE_END)}",
    lambda c: "好的，请您稍等，我帮您查询一下",
    lambda c: "不好意思让您久等了",
    lambda c: f"请问您还有其他问题吗？没有的话{c.c(POLITE_END)}",
    lambda c: f"为了核实您的身份，请提供一下您的{c.c(['姓名', '身份证后六位', '预留手机号', '注册邮箱'])}",
    lambda c: f"我叫{c.name()}，身份证后四位是{c.tail4()}",
    lambda c: f"我的手机号是{c.mobile()}",
    lambda c: f"您可以拨打我们的服务热线{c.hotline()}进行咨询",
    lambda c: f"我们的座机号码是{c.landline()}，工作时间是{c.time()}到{c.time()}",
    # --- bank ---------------------------------------------------------------------
    lambda c: f"您尾号{c.tail4()}的{c.c(CARD_KINDS)}于{c.date()}{c.time()}消费{c.amount()}元",
    lambda c: f"您尾号{c.tail4()}的账户{c.date()}转入{c.amount()}元，当前余额{c.amount()}元",
    lambda c: f"我想查一下我{c.c(BANKS)}的卡号{c.card()}的余额",
    lambda c: f"我的{c.c(CARD_KINDS)}丢了，要挂失，卡号是{c.card()}",
    lambda c: f"您的验证码是{c.code6()}，{c.small()}分钟内有效，请勿泄露给他人",
    lambda c: f"信用卡账单金额{c.amount()}元，最后还款日是{c.date()}",
    lambda c: f"分{c.c([3, 6, 12, 24])}期的话每期手续费率是{c.pct()}",
    lambda c: f"现在的一年期定期存款利率是{c.pct()}，五万元起存",
    lambda c: f"我昨天在ATM机上取钱，卡被吞了，地址是{c.address()}",
    lambda c: f"请问{c.c(BANKS)}在{c.city()}有几个网点？最近的在哪里",
    lambda c: f"这笔{c.amount()}元的交易不是我本人操作的，我要申请冻结",
    lambda c: f"您的贷款{c.amount()}元已经审批通过，年化利率{c.pct()}",
    lambda c: "请您登录手机银行APP，在我的账户里查看明细",
    lambda c: "我忘记了网银密码，请问怎么重置",
    lambda c: f"转账到{c.c(BANKS)}需要{c.small()}个工作日，手续费{c.amount()}元",
    # --- telecom ------------------------------------------------------------------
    lambda c: f"您好，我是{c.c(CARRIERS)}用户，号码{c.mobile()}，这个月的话费怎么扣了{c.amount()}元",
    lambda c: f"您当前办理的是{c.c(PLANS)}，每月包含{c.gb()}流量和{c.small() * 50}分钟通话",
    lambda c: f"我想把套餐改成{c.c(PLANS)}，下个月{c.small()}号生效可以吗",
    lambda c: f"您本月已使用流量{c.gb()}，剩余{c.gb()}",
    lambda c: f"家里的宽带从{c.date()}开始就上不了网，WIFI一直断",
    lambda c: f"我们会在{c.weekday()}{c.time()}安排师傅上门维修，地址是{c.address()}对吗",
    lambda c: f"您的话费余额为{c.amount()}元，为避免停机请及时充值",
    lambda c: f"请发送短信{c.c(['CXLL', 'YE', 'TD', 'KT'])}到{c.hotline()}查询",
    lambda c: f"我要注销这张SIM卡，号码是{c.mobile()}",
    lambda c: f"国际漫游每天{c.small() * 5}元，不限流量，在{c.c(['日本', '韩国', '泰国', '美国', '新加坡', '欧洲'])}都能用",
    lambda c: f"按{c.c(['一', '二', '三', '零', '九'])}号键转人工服务",
    # --- e-commerce / delivery ---------------------------------------------------
    lambda c: f"我在你们店买的{c.c(PRODUCTS)}到现在还没发货，订单号是{c.order()}",
    lambda c: f"您的订单{c.order()}已经由{c.c(COURIERS)}快递发出，预计{c.date()}送达",
    lambda c: f"我收到的{c.c(PRODUCTS)}是坏的，要退货退款，一共{c.amount()}元",
    lambda c: f"快递员说放在{c.c(['门卫', '快递柜', '驿站', '前台', '物业'])}了，可是我没找到",
    lambda c: f"请把收货地址改成{c.address()}，收件人{c.name()}，电话{c.mobile()}",
    lambda c: f"这个{c.c(PRODUCTS)}现在打{c.r.randint(5, 9)}折，满{c.r.choice([199, 299, 399, 500])}减{c.r.choice([20, 30, 50, 100])}",
    lambda c: f"退款{c.amount()}元会在{c.small()}个工作日内原路退回",
    lambda c: f"您的包裹运单号{c.order()}目前在{c.city()}转运中心",
    lambda c: f"{c.c(COURIERS)}快递吗？我的件显示签收了，但是我本人没收到",
    lambda c: f"我要投诉，你们的{c.c(['客服', '快递员', '售后', '商家', '师傅'])}态度太差了",
    lambda c: f"会员积分还有{c.r.randint(100, 99999)}分，可以兑换{c.c(PRODUCTS)}",
    lambda c: f"升级VIP会员每年{c.amount()}元，可以享受{c.pct()}的折扣",
    # --- utilities / property -----------------------------------------------------
    lambda c: f"我家{c.c(['停水', '停电', '没有燃气', '暖气不热', '电梯坏了'])}了，地址是{c.address()}",
    lambda c: f"您家上个月用电{c.r.randint(50, 900)}度，电费{c.amount()}元",
    lambda c: f"燃气费欠费{c.amount()}元，请于{c.date()}前缴清",
    lambda c: f"物业费每平方米{c.r.randint(1, 5)}.{c.r.randint(0, 9)}元，一年一共{c.amount()}元",
    # --- hospital / appointments ----------------------------------------------------
    lambda c: f"我想预约{c.date()}{c.c(DEPARTMENTS)}的专家号",
    lambda c: f"{c.mr()}，您预约的是{c.weekday()}{c.time()}的{c.c(DEPARTMENTS)}，请提前{c.small() * 5}分钟到",
    lambda c: f"您的就诊号是{c.r.randint(1, 200)}号，前面还有{c.r.randint(1, 60)}人",
    lambda c: f"体温{c.r.randint(36, 39)}.{c.r.randint(0, 9)}℃，需要去发热门诊",
    lambda c: f"请问{c.city()}第{c.r.randint(1, 9)}人民医院{c.c(DEPARTMENTS)}周末有门诊吗",
    lambda c: f"我要改约到{c.date()}{c.time()}，可以吗",
    # --- insurance / government -------------------------------------------------------
    lambda c: f"您的保单号{c.order()}将于{c.date()}到期，续保保费{c.amount()}元",
    lambda c: f"车险理赔需要提供行驶证、驾驶证和事故认定书，理赔款{c.amount()}元",
    lambda c: f"社保每个月缴费基数是{c.r.randint(3000, 30000)}元，个人缴纳比例{c.pct()}",
    lambda c: f"公积金贷款利率是{c.pct()}，最高可以贷{c.r.randint(30, 120)}万",
    lambda c: f"办理居住证需要带身份证和租房合同到{c.city()}{c.f.district()}区政务服务中心",
    # --- travel -----------------------------------------------------------------------
    lambda c: f"我订了{c.date()}从{c.city()}到{c.city()}的机票，航班号{c.c(['CA', 'MU', 'CZ', 'HU', 'ZH'])}{c.r.randint(1000, 9999)}",
    lambda c: f"{c.c(['G', 'D', 'K', 'Z', 'T'])}{c.r.randint(1, 9999)}次列车{c.time()}从{c.city()}站出发",
    lambda c: f"酒店预订{c.small()}晚，{c.date()}入住，每晚{c.amount()}元",
    lambda c: f"我要退票，订单号{c.order()}，退票手续费是{c.pct()}吗",
    lambda c: f"从{c.city()}到{c.city()}大概{c.r.randint(1, 30)}个小时，{c.r.randint(100, 3000)}公里",
    # --- caller chit-chat -------------------------------------------------------------
    lambda c: f"喂，是{c.mr()}吗？我是{c.name()}，{c.c(['你现在方便说话吗', '我晚点再打给你', '上次说的事怎么样了'])}",
    lambda c: f"我们约在{c.weekday()}{c.time()}，{c.address()}门口见",
    lambda c: f"我的QQ号是{c.r.randint(10000, 9999999999)}，微信号就是手机号{c.mobile()}",
    lambda c: f"{c.company()}今年营业额增长了{c.pct()}，达到{c.amount()}元",
    lambda c: f"今天{c.city()}最高气温{c.r.randint(-5, 40)}℃，最低{c.r.randint(-20, 25)}℃",
    lambda c: f"请您打开{c.c(ACRONYMS)}，然后点击右上角的设置",
    lambda c: f"从{c.date()}到{c.date()}，一共{c.r.randint(2, 90)}天",
    lambda c: f"您好，{c.company()}在{c.address()}，联系电话{c.landline()}",
    lambda c: f"您一共消费{c.amount()}元，优惠{c.amount()}元，实付{c.amount()}元",
    lambda c: f"{c.r.randint(2, 9)}个人的话要{c.r.randint(2, 5)}张桌子，大概{c.small() * 100}元",
]


def generate_templates(n: int, seed: int) -> list[str]:
    """``n`` filled template sentences (written form, not yet normalised)."""
    from faker import Faker  # noqa: PLC0415 (optional: the data extra)

    rng = random.Random(f"templates-{seed}")
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    ctx = _Ctx(rng, fake)
    out = []
    for _ in range(n):
        out.append(rng.choice(TEMPLATES)(ctx))
    return out
